// The library's multi-select: "Select all on this page", the count of selected cards, and the tags field and the
// recipe menu shown only for the actions that take them. The bar is a plain form: without this script it works the same.
(() => {
  "use strict";

  const TAG_ACTIONS = ["tag", "untag"];

  function sync(form) {
    const boxes = [...document.querySelectorAll('input.lora-select[form="bulk-form"]')];
    const selected = boxes.filter((box) => box.checked).length;
    form.querySelector("[data-selected-count]").textContent = selected ? `${selected} selected` : "";
    const all = form.querySelector("[data-select-all]");
    all.checked = selected > 0 && selected === boxes.length;
    all.indeterminate = selected > 0 && selected < boxes.length;
    form.querySelector('button[type="submit"]').disabled = !selected;
    const action = form.querySelector('[name="action"]').value;
    form.querySelector('[name="tags"]').hidden = !TAG_ACTIONS.includes(action);
    const recipe = form.querySelector('[name="recipe"]');
    if (recipe) recipe.hidden = action !== "add_to_recipe";
  }

  // Delegated: htmx replaces the results (and the form with them) as the filters change.
  document.addEventListener("change", (event) => {
    const form = document.getElementById("bulk-form");
    if (!form) return;
    if (event.target.matches("[data-select-all]")) {
      document.querySelectorAll('input.lora-select[form="bulk-form"]').forEach((box) => {
        box.checked = event.target.checked;
      });
    }
    if (event.target.closest("#bulk-form") || event.target.matches("input.lora-select")) sync(form);
  });
  document.body.addEventListener("htmx:load", () => {
    const form = document.getElementById("bulk-form");
    if (form) sync(form);
  });
})();
