// The library's upload dialog. Every file goes straight to storage with the API's multipart
// protocol: presigned S3 part URLs, or the app's signed part URLs with local storage (one code path
// for both). Each file gets a progress bar; a failed part is retried; the new LoRA's card is added
// to the grid, and while the card polls its way from processing to ready or failed, the file's row
// shows the same status. A duplicate found by the ingest task leaves no card: the row names the original.
// A PEFT checkpoint (adapter_config.json with adapter_model.safetensors, or one .zip of both) goes through the app
// in one request instead (POST …/loras/, as the API takes it): the server converts and checks it and answers in its
// own words, shown in the checkpoint's row.
// Elsewhere (the Generate page's picker) the dialog polls each new LoRA's card itself and announces a ready one
// with a "lora:ready" event on the document.
(() => {
  "use strict";

  const dialog = document.querySelector("[data-uploader]");
  if (!dialog) return;

  const PART_RETRIES = 3; // after the first attempt, with 1 s, 2 s, 4 s pauses
  const PARALLEL_PARTS = 3; // per file: browsers open about 6 connections per host
  const PICKLE_EXTENSIONS = [".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"];
  const PROCESSING = "Processing: checking and hashing the file…";
  const CARD = "[data-lora-id][data-status]";

  const uploadsUrl = dialog.dataset.uploadsUrl;
  const lorasUrl = dialog.dataset.lorasUrl;
  const maxBytes = Number(dialog.dataset.maxBytes);
  const maxAppBytes = Number(dialog.dataset.maxAppBytes);
  const PEFT_CONFIG = "adapter_config.json";
  const PEFT_WEIGHTS = "adapter_model.safetensors";
  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const list = dialog.querySelector("[data-upload-list]");
  const itemTemplate = dialog.querySelector("template[data-upload-item]");
  const input = dialog.querySelector('input[type="file"]');
  const dropzone = dialog.querySelector("[data-dropzone]");
  const rowsByLora = new Map(); // LoRA id → its row, until the card is ready or failed
  let inFlight = 0;
  // data-card-url is LoRA 0's card; every LoRA's page URLs follow the same pattern.
  const loraUrl = (id, suffix = "") => dialog.dataset.cardUrl.replace(/\/0\/card\/$/, `/${id}/${suffix}`);

  // --- the server's checks, with its words (loras/services.py check_declared_file) -------------

  // Python formats with round-half-even; toFixed rounds ties up. Sizes are binary fractions, so
  // ties are exact here and must go the way Python's do.
  function fixed1(value) {
    let tenths = Math.floor(value * 10);
    const rest = value * 10 - tenths;
    if (rest > 0.5 || (rest === 0.5 && tenths % 2 === 1)) tenths += 1;
    return (tenths / 10).toFixed(1);
  }

  function humanSize(size) {
    for (const unit of ["bytes", "KiB", "MiB", "GiB", "TiB"]) {
      if (size < 1024 || unit === "TiB") {
        return unit === "bytes" ? `${Math.round(size)} bytes` : `${fixed1(size)} ${unit}`.replace(".0 ", " ");
      }
      size /= 1024;
    }
  }

  function extensionOf(name) {
    const base = name.split(/[/\\]/).pop().replace(/^\.+/, "");
    const match = /\.([A-Za-z0-9]{1,16})$/.exec(base);
    return match ? `.${match[1].toLowerCase()}` : "";
  }

  function declaredFileProblem(file) {
    const extension = extensionOf(file.name);
    if (PICKLE_EXTENSIONS.includes(extension)) {
      return `'${file.name}' is a pickle checkpoint (${extension}). Pickle files can run code when loaded, so lorasite ` +
        "only stores .safetensors. Convert it on a trusted machine: " +
        "python -c \"import torch, safetensors.torch as st; " +
        "st.save_file(torch.load('in.pt', weights_only=True), 'out.safetensors')\"";
    }
    if (extension !== ".safetensors") return `'${file.name}' is not a .safetensors file.`;
    if (file.size < 1) return "This is not a LoRA: the file is empty.";
    if (file.size > maxBytes) return `The file is ${humanSize(file.size)}; the limit is ${humanSize(maxBytes)} (LORASITE_MAX_LORA_BYTES).`;
    return "";
  }

  // loras/services/validation.py check_app_upload_size: the API refuses it from the request's size, unread.
  function appUploadProblem(size) {
    if (size <= maxAppBytes) return "";
    return `The file is ${humanSize(size)}; uploads through the app are limited to ${humanSize(maxAppBytes)} ` +
      "(LORASITE_MAX_APP_UPLOAD_BYTES). Send larger files with the multipart upload (POST …/loras/uploads/).";
  }

  // --- the JSON API (session cookie + CSRF header) ---------------------------------------------

  class ApiError extends Error {
    constructor(body, status) {
      super(body.message || `The server answered ${status}.`);
      this.body = body;
      this.status = status;
    }
  }

  async function api(method, url, body) {
    const response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 204) return null;
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new ApiError(data, response.status);
    return data;
  }

  // --- one row per file --------------------------------------------------------------------------

  function addRow(name, size) {
    const row = itemTemplate.content.firstElementChild.cloneNode(true);
    row.querySelector(".upload-name").textContent = name;
    row.querySelector(".upload-size").textContent = humanSize(size);
    row.querySelector("progress").setAttribute("aria-label", `Upload of ${name}`);
    list.append(row);
    return row;
  }

  function setProgress(row, fraction) {
    const percent = Math.min(100, Math.round(fraction * 100));
    row.querySelector("progress").value = percent;
    row.querySelector(".upload-percent").textContent = `${percent}%`;
  }

  function setState(row, state, message, link) {
    row.dataset.state = state;
    row.querySelector(".upload-cancel").hidden = state !== "uploading";
    const status = row.querySelector(".upload-status");
    status.replaceChildren(message);
    if (link) status.append(" ", link);
  }

  function link(href, text) {
    return Object.assign(document.createElement("a"), { href, textContent: text });
  }

  // --- parts ---------------------------------------------------------------------------------------

  const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // XHR rather than fetch: only XHR reports upload progress.
  function putPart(url, blob, signal, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      const abort = () => xhr.abort();
      xhr.open("PUT", url);
      xhr.upload.onprogress = (event) => onProgress(event.loaded);
      xhr.onload = () => {
        const etag = xhr.getResponseHeader("ETag");
        if (xhr.status >= 200 && xhr.status < 300 && etag) return resolve(etag);
        const error = new Error(etag || xhr.status >= 300
          ? `storage answered ${xhr.status}`
          : "storage did not expose the part's ETag (the bucket's CORS rule must expose ETag)");
        error.status = xhr.status;
        reject(error);
      };
      xhr.onerror = () => reject(new Error("the connection to storage failed"));
      xhr.onabort = () => reject(new DOMException("Cancelled", "AbortError"));
      xhr.onloadend = () => signal.removeEventListener("abort", abort);
      signal.addEventListener("abort", abort, { once: true });
      xhr.send(blob);
    });
  }

  async function sendParts(file, started, row, cancelled) {
    let urls = new Map(started.parts.map((part) => [part.part_number, part.url]));
    const queue = [...urls.keys()];
    const sent = new Map(); // part number → bytes sent
    const done = [];
    const failed = new AbortController(); // one part giving up stops the others
    const signal = AbortSignal.any([cancelled, failed.signal]);

    const report = (number, bytes) => {
      sent.set(number, bytes);
      setProgress(row, [...sent.values()].reduce((a, b) => a + b, 0) / file.size);
    };

    async function sendPart(number) {
      const blob = file.slice((number - 1) * started.part_size, number * started.part_size);
      for (let attempt = 0; ; attempt += 1) {
        try {
          const etag = await putPart(urls.get(number), blob, signal, (bytes) => report(number, bytes));
          report(number, blob.size);
          return { part_number: number, etag };
        } catch (error) {
          report(number, 0);
          if (signal.aborted) throw error;
          if (attempt === PART_RETRIES) throw new Error(`Part ${number} failed ${attempt + 1} times: ${error.message}.`);
          // Part URLs expire (LORASITE_SIGNED_URL_SECONDS); storage then answers 403.
          if (error.status === 403) {
            const fresh = await api("GET", `${uploadsUrl}${started.upload_id}/`);
            urls = new Map(fresh.parts.map((part) => [part.part_number, part.url]));
          }
          await pause(1000 * 2 ** attempt);
        }
      }
    }

    async function worker() {
      while (queue.length) done.push(await sendPart(queue.shift()));
    }

    try {
      await Promise.all(Array.from({ length: Math.min(PARALLEL_PARTS, queue.length) }, worker));
    } catch (error) {
      failed.abort();
      throw error;
    }
    return done.sort((a, b) => a.part_number - b.part_number);
  }

  // --- a file, start to finish ---------------------------------------------------------------------

  function duplicateLink(error) {
    const existing = error.body && error.body.existing_lora_id;
    return existing ? link(loraUrl(existing), "Open the existing LoRA") : null;
  }

  // Several uploads finish close together: their re-renders of the results run one after another,
  // or one swap would replace the grid while another is adding a card to it.
  let rendering = Promise.resolve();

  function showCard(loraId, row) {
    rowsByLora.set(String(loraId), row);
    if (!document.getElementById("library-results")) return watch(loraId);
    rendering = rendering.catch(() => {}).then(async () => {
      // Re-render the results with the page's filters, so that the count, order and pages stay right;
      // a card the filters leave out goes on top anyway, for the row follows the card (see htmx:load).
      await htmx.ajax("GET", window.location.href, { target: "#library-results", swap: "outerHTML" });
      if (!document.getElementById(`lora-${loraId}`)) {
        await htmx.ajax("GET", loraUrl(loraId, "card/"), { target: "#lora-grid", swap: "afterbegin" });
      }
    });
    return rendering;
  }

  // Without the library's grid (the dialog on the Generate page): poll the card itself and mirror it.
  async function watch(loraId) {
    for (;;) {
      const response = await fetch(loraUrl(loraId, "card/"), { credentials: "same-origin" });
      if (!response.ok) throw new Error(`The server answered ${response.status}.`);
      const holder = document.createElement("div");
      holder.innerHTML = await response.text();
      const card = holder.querySelector(CARD);
      mirror(card);
      if (card.dataset.status !== "processing") return;
      await pause(2000);
    }
  }

  async function upload(file) {
    const row = addRow(file.name, file.size);
    const problem = declaredFileProblem(file);
    if (problem) {
      setState(row, "failed", problem);
      return;
    }
    const cancel = new AbortController();
    row.querySelector(".upload-cancel").addEventListener("click", () => cancel.abort(), { once: true });
    setState(row, "uploading", "Uploading…");
    inFlight += 1;
    let open = null; // the upload while storage holds parts that need an abort on failure
    try {
      open = await api("POST", uploadsUrl, { filename: file.name, size: file.size });
      const parts = await sendParts(file, open, row, cancel.signal);
      setState(row, "processing", PROCESSING);
      const completeUrl = `${uploadsUrl}${open.upload_id}/complete/`;
      let lora;
      try {
        lora = await api("POST", completeUrl, { parts });
      } catch (error) {
        // A proxy that timed out while the server still assembles: `complete` is idempotent (a second one
        // waits for the first and answers the same LoRA), so ask again before giving the upload up.
        if (error instanceof ApiError && error.status < 500) throw error;
        lora = await api("POST", completeUrl, { parts });
      }
      open = null;
      await showCard(lora.id, row);
    } catch (error) {
      if (open) api("DELETE", `${uploadsUrl}${open.upload_id}/`).catch(() => {}); // nothing left behind
      if (cancel.signal.aborted) setState(row, "cancelled", "Cancelled.");
      else setState(row, "failed", error.message, duplicateLink(error));
    } finally {
      inFlight -= 1;
    }
  }

  // --- a PEFT checkpoint, through the app -----------------------------------------------------------

  // XHR rather than fetch, for the upload's progress; the answer is the API's JSON either way.
  function postForm(url, form, signal, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      const abort = () => xhr.abort();
      xhr.open("POST", url);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("X-CSRFToken", csrfToken);
      xhr.upload.onprogress = (event) => event.lengthComputable && onProgress(event.loaded / event.total);
      xhr.onload = () => {
        let body = {};
        try {
          body = JSON.parse(xhr.responseText);
        } catch {
          // not JSON (a proxy's error page): ApiError says the status
        }
        if (xhr.status >= 200 && xhr.status < 300) resolve(body);
        else reject(new ApiError(body, xhr.status));
      };
      xhr.onerror = () => reject(new Error("The connection to the server failed."));
      xhr.onabort = () => reject(new DOMException("Cancelled", "AbortError"));
      xhr.onloadend = () => signal.removeEventListener("abort", abort);
      signal.addEventListener("abort", abort, { once: true });
      xhr.send(form);
    });
  }

  // checkpoint: {weights, config} (config absent for a .zip), or {files, problem} when the choice is no checkpoint.
  async function register(checkpoint) {
    const files = checkpoint.files || [checkpoint.config, checkpoint.weights].filter(Boolean);
    const size = files.reduce((total, file) => total + file.size, 0);
    const row = addRow(files.map((file) => file.name).join(" + "), size);
    const problem = checkpoint.problem || appUploadProblem(checkpoint.weights.size);
    if (problem) {
      setState(row, "failed", problem);
      return;
    }
    const cancel = new AbortController();
    row.querySelector(".upload-cancel").addEventListener("click", () => cancel.abort(), { once: true });
    setState(row, "uploading", "Uploading…");
    inFlight += 1;
    try {
      const form = new FormData();
      form.append("file", checkpoint.weights);
      if (checkpoint.config) form.append("adapter_config", checkpoint.config);
      const lora = await postForm(lorasUrl, form, cancel.signal, (fraction) => {
        setProgress(row, fraction);
        // Sent: the server now converts and checks it, then stores it, before it answers.
        if (fraction === 1) setState(row, "processing", PROCESSING);
      });
      await showCard(lora.id, row);
    } catch (error) {
      if (cancel.signal.aborted) setState(row, "cancelled", "Cancelled.");
      else setState(row, "failed", error.message, duplicateLink(error));
    } finally {
      inFlight -= 1;
    }
  }

  const baseName = (file) => file.name.split(/[/\\]/).pop().toLowerCase();

  // The PEFT checkpoints among the chosen files, and the files that are single LoRAs. A browser gives no folders, so
  // two files named adapter_config.json cannot be told apart: one checkpoint per choice, or a .zip each.
  function checkpointsAndFiles(files) {
    const checkpoints = files.filter((file) => extensionOf(file.name) === ".zip").map((zip) => ({ weights: zip }));
    const configs = files.filter((file) => baseName(file) === PEFT_CONFIG);
    const weights = files.filter((file) => baseName(file) === PEFT_WEIGHTS);
    let peft = [];
    if (configs.length === 1 && weights.length === 1) {
      checkpoints.push({ config: configs[0], weights: weights[0] });
      peft = [configs[0], weights[0]];
    } else if (configs.length === 1) {
      const problem = `${PEFT_CONFIG} needs its ${PEFT_WEIGHTS}: choose the two files together, or one .zip of both.`;
      checkpoints.push({ files: configs, problem });
      peft = configs;
    } else if (configs.length > 1) {
      const problem = `${configs.length} files named ${PEFT_CONFIG}: give one PEFT checkpoint at a time, or a .zip ` +
        "for each.";
      checkpoints.push({ files: [...configs, ...weights], problem });
      peft = [...configs, ...weights];
    }
    const singles = files.filter((file) => extensionOf(file.name) !== ".zip" && !peft.includes(file));
    return { checkpoints, singles };
  }

  // Each card htmx loads (the results, a single card, a card's poll) updates its file's row.
  function mirror(card) {
    const row = rowsByLora.get(card.dataset.loraId);
    if (!row) return;
    if (card.dataset.status === "ready") {
      setState(row, "ready", "Ready.", link(card.querySelector(".lora-card-title a").href, "Open it"));
      // Pages with a LoRA picker (Generate) refresh it to offer the new LoRA.
      document.dispatchEvent(new CustomEvent("lora:ready", { detail: { id: Number(card.dataset.loraId) } }));
    } else if (card.dataset.status === "duplicate") {
      // The content is already in the workspace: the server keeps no card for it, so the grid drops this one
      // and the results are counted again; the row links the LoRA that has the content.
      const existing = card.querySelector("[data-duplicate-link]");
      setState(row, "duplicate", card.querySelector("[data-error]").textContent, existing.cloneNode(true));
      rowsByLora.delete(card.dataset.loraId);
      card.remove();
      if (document.getElementById("library-results")) {
        rendering = rendering.catch(() => {}).then(() =>
          htmx.ajax("GET", window.location.href, { target: "#library-results", swap: "outerHTML" }));
      }
      return;
    } else if (card.dataset.status === "failed") {
      const existing = card.querySelector("[data-duplicate-link]");
      setState(row, "failed", card.querySelector("[data-error]").textContent, existing && existing.cloneNode(true));
    } else {
      setState(row, "processing", PROCESSING);
      return;
    }
    rowsByLora.delete(card.dataset.loraId);
  }

  document.body.addEventListener("htmx:load", (event) => {
    const root = event.detail.elt;
    // Cards carry their status; other elements with a LoRA id (the Generate page's picker) are not cards.
    const cards = root.matches(CARD) ? [root] : root.querySelectorAll(CARD);
    cards.forEach(mirror);
  });

  function uploadAll(files) {
    const { checkpoints, singles } = checkpointsAndFiles([...files]);
    for (const checkpoint of checkpoints) register(checkpoint);
    for (const file of singles) upload(file);
  }

  input.addEventListener("change", () => {
    uploadAll(input.files);
    input.value = ""; // choosing the same file again fires "change" again
  });
  for (const type of ["dragenter", "dragover"]) {
    dropzone.addEventListener(type, (event) => {
      event.preventDefault();
      dropzone.classList.add("dragging");
    });
  }
  dropzone.addEventListener("dragleave", () => dropzone.classList.remove("dragging"));
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    dropzone.classList.remove("dragging");
    uploadAll(event.dataTransfer.files);
  });
  // Leaving the page would cut the uploads off half-way.
  window.addEventListener("beforeunload", (event) => {
    if (inFlight) event.preventDefault();
  });
})();
