// Card previews: a video preview plays, muted, only while the pointer (or keyboard focus) is on its card, and
// pauses when it leaves; nothing autoplays. Its bytes are fetched at the first hover (preload="none").
// Event delegation, so cards htmx swaps in work too.
(() => {
  "use strict";

  const videoIn = (node) => node.closest?.(".lora-card")?.querySelector(".lora-preview video") ?? null;
  // Moving between two elements of the same card is not leaving it.
  const leavesCard = (event) => !event.relatedTarget || !event.target.closest(".lora-card").contains(event.relatedTarget);

  function play(event) {
    videoIn(event.target)?.play().catch(() => {}); // a browser that refuses playback keeps showing the poster
  }

  function pause(event) {
    const video = videoIn(event.target);
    if (video && leavesCard(event)) video.pause();
  }

  document.addEventListener("pointerover", play);
  document.addEventListener("pointerout", pause);
  document.addEventListener("focusin", play);
  document.addEventListener("focusout", pause);
})();
