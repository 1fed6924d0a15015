// The Generate page's input image (templates/generation/_input_image.html): a picked or dropped file is previewed on
// the canvas at the chosen resolution with the chosen fit — the geometry of generation/inputs.py image_fit_to — and
// uploaded to the inputs API; the hidden field keeps the returned id. Listeners sit on the document, so the section
// works again after htmx re-renders the fields on a model switch.
(() => {
  "use strict";
  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const PREVIEW_WIDTH = 320;

  function resolution(section) {
    const value = section.closest("form").querySelector('[name="resolution"]')?.value || "16x9";
    return value.split("x").map(Number);
  }

  function draw(section) {
    const image = section.inputImage;
    if (!image) return;
    const [width, height] = resolution(section);
    const canvas = section.querySelector("canvas");
    canvas.width = PREVIEW_WIDTH;
    canvas.height = Math.round((PREVIEW_WIDTH * height) / width);
    const context = canvas.getContext("2d");
    context.fillStyle = "#000";
    context.fillRect(0, 0, canvas.width, canvas.height);
    const fit = section.querySelector('[name="image_fit"]:checked')?.value || "center-crop";
    if (fit === "fill") {
      context.drawImage(image, 0, 0, canvas.width, canvas.height);
      return;
    }
    const pick = fit === "fit" ? Math.min : Math.max; // fit: all of it, letterboxed; center-crop: cover, cut evenly
    const scale = pick(canvas.width / image.naturalWidth, canvas.height / image.naturalHeight);
    const drawnWidth = image.naturalWidth * scale;
    const drawnHeight = image.naturalHeight * scale;
    context.drawImage(image, (canvas.width - drawnWidth) / 2, (canvas.height - drawnHeight) / 2, drawnWidth, drawnHeight);
  }

  function show(section, { caption = "", error = "" }) {
    section.querySelector("[data-input-caption]").textContent = caption;
    const problem = section.querySelector("[data-input-error]");
    problem.textContent = error;
    problem.hidden = !error;
    section.classList.toggle("has-error", Boolean(error));
  }

  async function upload(section, file) {
    const hidden = section.querySelector('[name="image"]');
    hidden.value = "";
    show(section, { caption: `Uploading ${file.name}…` });
    const body = new FormData();
    body.append("file", file);
    let response;
    try {
      response = await fetch(section.dataset.uploadUrl, {
        method: "POST",
        body,
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRFToken": csrfToken },
      });
    } catch {
      show(section, { error: "The upload failed: the server could not be reached." });
      return;
    }
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      show(section, { error: answer.message || `The upload failed (${response.status}).` });
      return;
    }
    hidden.value = answer.id;
    show(section, { caption: `${file.name}: ${answer.width} × ${answer.height}, uploaded.` });
  }

  function choose(section, file) {
    if (!file) return;
    const image = new Image();
    image.onload = () => {
      section.inputImage = image;
      section.querySelector("[data-input-preview]").hidden = false;
      draw(section);
    };
    image.src = URL.createObjectURL(file);
    upload(section, file);
  }

  document.addEventListener("change", (event) => {
    const section = event.target.closest("[data-input-image]");
    if (section && event.target.type === "file") choose(section, event.target.files[0]);
    if (event.target.name === "image_fit" || event.target.name === "resolution") {
      document.querySelectorAll("[data-input-image]").forEach(draw);
    }
  });
  document.addEventListener("dragover", (event) => {
    const zone = event.target.closest?.("[data-input-drop]");
    if (!zone) return;
    event.preventDefault();
    zone.classList.add("dragging");
  });
  document.addEventListener("dragleave", (event) => event.target.closest?.("[data-input-drop]")?.classList.remove("dragging"));
  document.addEventListener("drop", (event) => {
    const zone = event.target.closest?.("[data-input-drop]");
    if (!zone) return;
    event.preventDefault();
    zone.classList.remove("dragging");
    choose(zone.closest("[data-input-image]"), event.dataTransfer.files[0]);
  });
})();
