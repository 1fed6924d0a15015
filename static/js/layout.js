// Shared dashboard behaviour that HTML alone does not give: buttons that open a <dialog> as a modal
// (Escape closes it natively; focus goes back to the button), the workspace menu closing on Escape
// or a click elsewhere, copy-on-click, and validation answers kept in place. Event delegation, so content htmx
// swaps in works too.
(() => {
  "use strict";

  // A 400 is a form answered with its errors, for the request's own target (base.html's htmx-config swaps it).
  // With DEBUG on, django-htmx's script puts every 400 in place of the whole document from a listener on
  // `document`; stopping the event in the capture phase keeps it from there. htmx goes on regardless: it reads
  // the event's result (preventDefault), not its propagation. Its help with 500s stays.
  window.addEventListener("htmx:beforeOnLoad", (event) => {
    if (event.detail.xhr && event.detail.xhr.status === 400) event.stopPropagation();
  }, true);

  const openers = new WeakMap(); // dialog → the button that opened it

  function announce(text) {
    const region = document.getElementById("announcer");
    region.textContent = "";
    // A fresh text node in the next frame, so that the same message twice is announced twice.
    requestAnimationFrame(() => { region.textContent = text; });
  }

  document.addEventListener("click", (event) => {
    const opener = event.target.closest("[data-dialog-open]");
    if (opener) {
      // An opener may be a link to the page with its dialog open, for browsers without JavaScript.
      event.preventDefault();
      const dialog = document.getElementById(opener.dataset.dialogOpen);
      openers.set(dialog, opener);
      dialog.showModal();
      return;
    }
    const closer = event.target.closest("[data-dialog-close]");
    if (closer) {
      event.preventDefault();
      closer.closest("dialog").close();
      return;
    }
    // A click on the backdrop lands on the <dialog> element itself, outside its box.
    if (event.target instanceof HTMLDialogElement && event.target.open) {
      const box = event.target.getBoundingClientRect();
      const inside = event.clientX >= box.left && event.clientX <= box.right && event.clientY >= box.top && event.clientY <= box.bottom;
      if (!inside) event.target.close();
    }
    for (const menu of document.querySelectorAll("details[data-menu][open]")) {
      if (!menu.contains(event.target)) menu.open = false;
    }
  });

  // "close" does not bubble; listen in the capture phase.
  document.addEventListener("close", (event) => {
    const opener = openers.get(event.target);
    if (opener && opener.isConnected) opener.focus();
  }, true);

  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    const menu = event.target.closest && event.target.closest("details[data-menu][open]");
    if (menu) {
      menu.open = false;
      menu.querySelector("summary").focus();
    }
  });

  async function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
    // Plain-HTTP deployments have no Clipboard API; a selected, off-screen textarea still copies.
    const area = Object.assign(document.createElement("textarea"), { value: text, readOnly: true });
    area.className = "visually-hidden";
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy]");
    if (!button) return;
    try {
      await copy(button.dataset.copy);
      button.classList.add("copied");
      setTimeout(() => button.classList.remove("copied"), 1500);
      announce(`Copied “${button.dataset.copy}”.`);
    } catch {
      announce("Copying is blocked by the browser; select the text instead.");
    }
  });
})();
