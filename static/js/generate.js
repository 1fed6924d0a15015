// Generation pages. The Generate form's LoRA picker (rows per expert section, weight sliders, the
// search dialog, the running count against the limit) and, on the job pages, the aria-live line.
// Listeners are delegated from the document because htmx replaces the form section on a model switch.
(() => {
  "use strict";

  let opener = null; // the "Add" button that opened the dialog: focus returns to it
  let addedRows = 0; // numbers the ids of rows added here (server-rendered rows use their index)

  const dialog = () => document.getElementById("lora-dialog");

  function refresh() {
    const picker = document.querySelector(".lora-picker");
    if (!picker) return;
    const limit = Number(picker.dataset.loraLimit);
    const count = picker.querySelectorAll(".lora-row").length;
    const anyUsable = document.querySelector(".lora-option:not([data-unusable])") !== null;
    picker.querySelector("[data-lora-count]").textContent = count;
    picker.querySelector(".lora-count").classList.toggle("full", count >= limit);
    picker.querySelectorAll("[data-add-lora]").forEach((button) => { button.disabled = count >= limit || !anyUsable; });
    picker.querySelectorAll(".lora-section").forEach((section) => {
      section.querySelector(".lora-none").hidden = section.querySelector(".lora-row") !== null;
    });
  }

  function filterOptions(query) {
    const terms = query.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const items = dialog().querySelectorAll(".lora-options li");
    let shown = 0;
    items.forEach((item) => {
      item.hidden = !terms.every((term) => item.dataset.search.includes(term));
      if (!item.hidden) shown += 1;
    });
    dialog().querySelector(".lora-options-empty").hidden = shown > 0 || items.length === 0;
  }

  function openDialog(button) {
    const box = dialog();
    const chosen = new Set([...document.querySelectorAll(".lora-row [name=lora_id]")].map((input) => input.value));
    opener = button;
    box.dataset.expert = button.dataset.expert;
    box.querySelector("[data-dialog-section]").textContent = button.dataset.expert ? `${button.dataset.title.toLowerCase()} ` : "";
    box.querySelectorAll(".lora-option").forEach((option) => {
      const added = chosen.has(option.dataset.loraId); // the service refuses a LoRA listed twice, in any section
      option.querySelector(".option-added").hidden = !added;
      option.disabled = added || option.hasAttribute("data-unusable");
    });
    const search = box.querySelector("#lora-search");
    search.value = "";
    filterOptions("");
    box.showModal();
    search.focus();
  }

  function addRow(option) {
    const box = dialog();
    const section = document.querySelector(`.lora-section[data-expert="${box.dataset.expert}"]`);
    const row = document.getElementById("lora-row-template").content.firstElementChild.cloneNode(true);
    const slider = row.querySelector("input[type=range]");
    const exact = row.querySelector(".lora-weight-exact");
    const [sliderLabel, exactLabel] = row.querySelectorAll(".lora-weight label");
    addedRows += 1;
    row.dataset.loraId = option.dataset.loraId;
    row.querySelector("[name=lora_id]").value = option.dataset.loraId;
    row.querySelector("[name=lora_expert]").value = box.dataset.expert;
    row.querySelectorAll("[data-fill=name]").forEach((spot) => { spot.textContent = option.dataset.name; });
    row.querySelector("[data-fill=meta]").textContent = option.dataset.meta;
    slider.id = sliderLabel.htmlFor = `lora-weight-new-${addedRows}`;
    exact.id = exactLabel.htmlFor = `lora-exact-new-${addedRows}`;
    slider.value = exact.value = option.dataset.weight; // starts at the LoRA's preferred weight
    section.querySelector(".lora-rows").append(row);
    opener = null;
    box.close();
    refresh();
    slider.focus();
  }

  function removeRow(button) {
    const section = button.closest(".lora-section");
    button.closest(".lora-row").remove();
    refresh();
    section.querySelector("[data-add-lora]")?.focus();
  }

  document.addEventListener("click", (event) => {
    // The × button and a click on the backdrop close the dialog through layout.js.
    const target = event.target.closest("[data-add-lora], .lora-option, [data-remove-lora]");
    if (!target || target.disabled) return;
    if (target.matches("[data-add-lora]")) openDialog(target);
    else if (target.matches(".lora-option")) addRow(target);
    else removeRow(target);
  });

  document.addEventListener("input", (event) => {
    const target = event.target;
    if (target.id === "lora-search") {
      filterOptions(target.value);
    } else if (target.matches(".lora-row input[type=range]")) {
      target.closest(".lora-row").querySelector(".lora-weight-exact").value = Number(target.value).toFixed(2);
    } else if (target.matches(".lora-weight-exact") && target.value !== "" && target.checkValidity()) {
      target.closest(".lora-row").querySelector("input[type=range]").value = target.value;
    }
  });

  document.addEventListener("keydown", (event) => {
    // The dialog sits inside the form: Enter in the search box would submit the job. Go to the first match instead.
    if (event.key === "Enter" && event.target.id === "lora-search") {
      event.preventDefault();
      dialog().querySelector(".lora-options li:not([hidden]) .lora-option:not(:disabled)")?.focus();
    }
  });

  // `close` does not bubble; capture it. Closing without picking (Esc, ×) returns focus to the Add button.
  document.addEventListener("close", (event) => {
    if (event.target === dialog() && opener) {
      opener.focus();
      opener = null;
    }
  }, true);

  document.addEventListener("htmx:afterSwap", () => {
    refresh();
    // Polled partials re-render the same words every 2 s; copy them into the aria-live line only when
    // they change, so screen readers hear status changes and nothing else.
    const source = document.querySelector("[data-live-status]");
    const region = document.getElementById("live-status");
    const text = source ? source.textContent.trim() : "";
    if (region && text && region.textContent.trim() !== text) region.textContent = text;
  });

  refresh();
})();
