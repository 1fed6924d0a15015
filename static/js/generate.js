// Generation pages. The Generate form's LoRA picker (rows per expert section, weight sliders, the
// search dialog, the running count against the limit, trigger words into the prompt) and, on the job
// pages, the aria-live line.
// Listeners are delegated from the document because htmx replaces the form section on a model switch.
// On a two-expert model a LoRA may sit in both sections (one row each, its own weight): the form posts it
// as one "both" entry, so it counts once toward the limit.
(() => {
  "use strict";

  let opener = null; // the "Add" button that opened the dialog: focus returns to it
  let addedRows = 0; // numbers the ids of rows added here (server-rendered rows use their index)

  const dialog = () => document.getElementById("lora-dialog");
  const section = (expert) => document.querySelector(`.lora-section[data-expert="${expert}"]`);
  const idsIn = (root) => new Set([...root.querySelectorAll(".lora-row [name=lora_id]")].map((input) => input.value));

  function announce(text) {
    const region = document.getElementById("announcer");
    if (!region) return;
    region.textContent = "";
    requestAnimationFrame(() => { region.textContent = text; });
  }

  function refresh() {
    const picker = document.querySelector(".lora-picker");
    if (!picker) return;
    const limit = Number(picker.dataset.loraLimit);
    const count = idsIn(picker).size;
    const anyUsable = document.querySelector(".lora-option:not([data-unusable])") !== null;
    picker.querySelector("[data-lora-count]").textContent = count;
    picker.querySelector(".lora-count").classList.toggle("full", count >= limit);
    picker.querySelectorAll("[data-add-lora]").forEach((button) => { button.disabled = count >= limit || !anyUsable; });
    picker.querySelectorAll(".lora-section").forEach((part) => {
      part.querySelector(".lora-none").hidden = part.querySelector(".lora-row") !== null;
    });
    checkRecommended();
  }

  // A LoRA's recommended settings (forms.recommended_params: steps, guidance, guidance_2) against the form's:
  // each picked LoRA whose settings the form contradicts says so, naming the inputs by their labels.
  const recommendedOf = (part) => JSON.parse(part.dataset.recommended || "null") || {};
  const paramInput = (name) => document.querySelector(`#generate-form [name="${name}"]`);

  function checkRecommended() {
    document.querySelectorAll(".lora-row .lora-recommended:not([hidden])").forEach((part) => {
      const differences = Object.entries(recommendedOf(part))
        .filter(([name, value]) => paramInput(name) && Number(paramInput(name).value) !== Number(value))
        .map(([name]) => {
          const input = paramInput(name);
          const label = document.querySelector(`label[for="${input.id}"]`)?.textContent.trim() || name;
          return `${label} ${input.value || "empty"}`;
        });
      const conflict = part.querySelector("[data-recommended-conflict]");
      conflict.textContent = differences.length
        ? `The form differs from these recommended settings: ${differences.join(", ")}.`
        : "";
      conflict.hidden = differences.length === 0;
    });
  }

  function useRecommended(button) {
    const part = button.closest(".lora-recommended");
    const settings = recommendedOf(part);
    Object.entries(settings).forEach(([name, value]) => {
      const input = paramInput(name);
      if (input) input.value = value;
    });
    checkRecommended();
    announce(`Recommended settings set: ${part.querySelector("[data-fill=recommended]").textContent}.`);
  }

  function filterOptions(query) {
    const terms = query.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const items = dialog().querySelectorAll(".lora-options li, .lora-pair-options li");
    let shown = 0;
    items.forEach((item) => {
      item.hidden = !terms.every((term) => item.dataset.search.includes(term));
      if (!item.hidden) shown += 1;
    });
    dialog().querySelector(".lora-options-empty").hidden = shown > 0 || items.length === 0;
  }

  // The server lists usable LoRAs first, most recently used first. A section's picker puts the LoRAs marked
  // for its expert (or for both) ahead of the others, keeping that order within each group.
  function orderOptions(expert) {
    const list = dialog().querySelector(".lora-options");
    const items = [...list.children];
    items.forEach((item, index) => { if (item.dataset.order === undefined) item.dataset.order = index; });
    const rank = (item) => {
      const option = item.querySelector(".lora-option");
      if (option.hasAttribute("data-unusable")) return 2;
      return !expert || [expert, "both"].includes(option.dataset.hint) ? 0 : 1;
    };
    items.sort((a, b) => rank(a) - rank(b) || a.dataset.order - b.dataset.order).forEach((item) => list.append(item));
    dialog().querySelector("[data-order-hint]").hidden = !expert;
  }

  function openDialog(button) {
    const box = dialog();
    const expert = button.dataset.expert;
    const here = idsIn(section(expert));
    const everywhere = idsIn(document.querySelector(".lora-picker"));
    const others = [...document.querySelectorAll(".lora-section")].filter((part) => part.dataset.expert !== expert);
    opener = button;
    box.dataset.expert = expert;
    box.querySelector("[data-dialog-section]").textContent = expert ? `${button.dataset.title.toLowerCase()} ` : "";
    box.querySelectorAll(".lora-option").forEach((option) => {
      const id = option.dataset.loraId;
      const note = option.querySelector(".option-added");
      const elsewhere = others.find((part) => idsIn(part).has(id));
      note.hidden = !everywhere.has(id);
      if (here.has(id)) note.textContent = expert ? `Already in ${button.dataset.title}` : "Already added";
      else if (elsewhere) note.textContent = `In ${elsewhere.querySelector("legend").textContent.trim()}: adding it here runs it on both experts`;
      option.disabled = here.has(id) || option.hasAttribute("data-unusable");
      const both = option.parentElement.querySelector("[data-add-both]");
      if (both) both.disabled = [...document.querySelectorAll(".lora-section")].every((part) => idsIn(part).has(id));
    });
    box.querySelectorAll("[data-add-pair]").forEach((pair) => {
      pair.disabled = ["high", "low"].every((half) => idsIn(section(half)).has(pair.dataset[half]));
    });
    orderOptions(expert);
    const search = box.querySelector("#lora-search");
    search.value = "";
    filterOptions("");
    box.showModal();
    search.focus();
  }

  function newRow(option, expert) {
    const row = document.getElementById("lora-row-template").content.firstElementChild.cloneNode(true);
    const slider = row.querySelector("input[type=range]");
    const exact = row.querySelector(".lora-weight-exact");
    const [sliderLabel, exactLabel] = row.querySelectorAll(".lora-weight label");
    const triggers = JSON.parse(option.dataset.triggers || "null") || [];
    const warning = row.querySelector("[data-fill=warning]");
    addedRows += 1;
    row.dataset.loraId = option.dataset.loraId;
    row.querySelector("[name=lora_id]").value = option.dataset.loraId;
    row.querySelector("[name=lora_expert]").value = expert;
    row.querySelectorAll("[data-fill=name]").forEach((spot) => { spot.textContent = option.dataset.name; });
    row.querySelector("[data-fill=meta]").textContent = option.dataset.meta;
    row.querySelector("[data-fill=triggers]").textContent = triggers.join(", ");
    row.querySelector("[data-insert-triggers]").dataset.triggers = JSON.stringify(triggers);
    row.querySelector(".lora-triggers").hidden = triggers.length === 0;
    // The server words the warning (forms.expert_warning) for each section; empty where the LoRA fits.
    warning.textContent = (expert && option.dataset[expert === "high" ? "warningHigh" : "warningLow"]) || "";
    warning.hidden = !warning.textContent;
    const recommended = row.querySelector(".lora-recommended");
    recommended.dataset.recommended = option.dataset.recommended || "{}";
    recommended.querySelector("[data-fill=recommended]").textContent = option.dataset.recommendedLabel || "";
    recommended.hidden = !option.dataset.recommendedLabel;
    slider.id = sliderLabel.htmlFor = `lora-weight-new-${addedRows}`;
    exact.id = exactLabel.htmlFor = `lora-exact-new-${addedRows}`;
    slider.value = exact.value = option.dataset.weight; // starts at the LoRA's preferred weight
    section(expert).querySelector(".lora-rows").append(row);
    return slider;
  }

  function addRows(option, experts) {
    const box = dialog();
    const sliders = experts.map((expert) => newRow(option, expert));
    opener = null;
    box.close();
    refresh();
    sliders[0].focus();
  }

  function addBoth(button) {
    const option = button.parentElement.querySelector(".lora-option");
    const experts = [...document.querySelectorAll(".lora-section")]
      .filter((part) => !idsIn(part).has(option.dataset.loraId))
      .map((part) => part.dataset.expert);
    addRows(option, experts);
  }

  // A pair (loras/_pair_options.html): each half into its section at the pair's weight; a half already there
  // keeps its row.
  function addPair(button) {
    const box = dialog();
    const sliders = [];
    for (const expert of ["high", "low"]) {
      const id = button.dataset[expert];
      if (idsIn(section(expert)).has(id)) continue;
      const slider = newRow(box.querySelector(`.lora-option[data-lora-id="${id}"]`), expert);
      const weight = button.dataset[expert === "high" ? "weightHigh" : "weightLow"];
      slider.value = slider.closest(".lora-row").querySelector(".lora-weight-exact").value = weight;
      sliders.push(slider);
    }
    opener = null;
    box.close();
    refresh();
    sliders[0]?.focus();
  }

  function removeRow(button) {
    const part = button.closest(".lora-section");
    button.closest(".lora-row").remove();
    refresh();
    part.querySelector("[data-add-lora]")?.focus();
  }

  // Whether `phrase` is in `text` as a whole phrase, whatever its case ("cat" is not in "catalog").
  function hasPhrase(text, phrase) {
    const escaped = phrase.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    return new RegExp(`(^|[^\\p{L}\\p{N}_])${escaped}($|[^\\p{L}\\p{N}_])`, "iu").test(text);
  }

  // The LoRA's trigger words go where the prompt's cursor was (at the end if the prompt was never focused),
  // comma-separated, leaving out those the prompt already has.
  function insertTriggers(button) {
    const prompt = document.querySelector("textarea[name=prompt]");
    const words = [...new Set((JSON.parse(button.dataset.triggers || "null") || []).map((word) => word.trim()))];
    const missing = words.filter((word) => word && !hasPhrase(prompt.value, word));
    if (missing.length === 0) {
      announce("The trigger words are already in the prompt.");
      return;
    }
    const text = prompt.value;
    const known = prompt.dataset.cursorKnown === "1";
    const start = known ? prompt.selectionStart : text.length;
    const end = known ? prompt.selectionEnd : text.length;
    const before = text.slice(0, start).replace(/\s+$/, "");
    const after = text.slice(end).replace(/^\s+/, "");
    const lead = before === "" ? "" : before.endsWith(",") ? " " : ", ";
    const tail = after === "" ? "" : after.startsWith(",") ? "" : ", ";
    const inserted = lead + missing.join(", ") + tail;
    prompt.value = before + inserted + after;
    const caret = before.length + inserted.length - tail.length;
    prompt.focus();
    prompt.setSelectionRange(caret, caret);
    prompt.dispatchEvent(new Event("input", { bubbles: true }));
    announce(`Added to the prompt: ${missing.join(", ")}.`);
  }

  document.addEventListener("focusin", (event) => {
    if (event.target.matches("textarea[name=prompt]")) event.target.dataset.cursorKnown = "1";
  });

  document.addEventListener("click", (event) => {
    // The × button and a click on the backdrop close the dialog through layout.js.
    const target = event.target.closest("[data-add-lora], .lora-option, [data-add-both], [data-add-pair], [data-remove-lora], [data-insert-triggers], [data-use-recommended]");
    if (!target || target.disabled) return;
    if (target.matches("[data-add-lora]")) openDialog(target);
    else if (target.matches("[data-add-pair]")) addPair(target);
    else if (target.matches(".lora-option")) addRows(target, [dialog().dataset.expert]);
    else if (target.matches("[data-add-both]")) addBoth(target);
    else if (target.matches("[data-insert-triggers]")) insertTriggers(target);
    else if (target.matches("[data-use-recommended]")) useRecommended(target);
    else removeRow(target);
  });

  document.addEventListener("input", (event) => {
    const target = event.target;
    if (target.closest(".param-grid")) checkRecommended();
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

  // A LoRA uploaded from this page ("Manage / upload", static/js/upload.js) joins the picker once ready: the
  // fields re-render as on a model switch, keeping the prompt and the picked rows.
  document.addEventListener("lora:ready", () => {
    const model = document.querySelector("[name=model]:checked");
    if (model) htmx.trigger(model, "change");
  });

  refresh();
})();
