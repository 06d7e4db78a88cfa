// Shared by every console page: the API key (kept in sessionStorage for this browser session and sent
// as X-API-Key), the gallery chosen (kept the same way), calls to the JSON API, and messages that say
// what went wrong.
"use strict";

(function () {
  const KEY = "lrface.apiKey";
  const GALLERY = "lrface.gallery";
  const DEFAULT_GALLERY = "default";

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
      this.detail = detail;
    }
  }

  function apiKey() {
    return sessionStorage.getItem(KEY) || "";
  }

  async function request(method, path, body) {
    const headers = {};
    const key = apiKey();
    if (key) headers["X-API-Key"] = key;
    let response;
    try {
      response = await fetch(path, { method, headers, body });
    } catch (err) {
      throw new ApiError(0, "the service does not answer (" + err.message + ")");
    }
    if (!response.ok) {
      let detail = response.statusText;
      try {
        const payload = await response.json();
        if (payload && payload.detail !== undefined) {
          detail = typeof payload.detail === "string" ? payload.detail : JSON.stringify(payload.detail);
        }
      } catch (_) { /* not JSON: keep the status text */ }
      throw new ApiError(response.status, detail);
    }
    return response;
  }

  async function json(method, path, body) {
    return (await request(method, path, body)).json();
  }

  // What an error means for the person at the page.
  function explain(err, action) {
    if (!(err instanceof ApiError)) return action + " failed: " + err.message;
    if (err.status === 401) {
      return "The service needs an API key (" + err.detail + "). Enter your key at the top of the page.";
    }
    if (err.status === 403) {
      if (/galler/.test(err.detail)) return "Your API key may not do this: " + err.detail + ".";
      return "Your API key may not do this: " + err.detail + ". Enrolling and deleting need a key with scope admin.";
    }
    if (err.status === 503) return "The service is not ready yet: " + err.detail + ". Try again in a few seconds.";
    if (err.status === 0) return action + " failed: " + err.detail;
    return action + " failed (" + err.status + "): " + err.detail;
  }

  function notice(message, kind) {
    const box = document.getElementById("notice");
    if (!message) {
      box.hidden = true;
      box.textContent = "";
      return;
    }
    box.textContent = message;
    box.className = "notice " + (kind || "error");
    box.hidden = false;
  }

  function currentGallery() {
    return sessionStorage.getItem(GALLERY) || DEFAULT_GALLERY;
  }

  function setGallery(name) {
    sessionStorage.setItem(GALLERY, name);
  }

  // The subject routes of a gallery (the chosen one unless named): the default one's are /gallery/subjects
  // (as before galleries). What a page shows keeps the gallery it came from, whatever is chosen since.
  function subjectsPath(subjectId, gallery = currentGallery()) {
    const base = gallery === DEFAULT_GALLERY ? "/gallery/subjects"
      : "/galleries/" + encodeURIComponent(gallery) + "/subjects";
    return subjectId === undefined ? base : base + "/" + encodeURIComponent(subjectId);
  }

  // The gallery selector: filled from GET /galleries (the galleries this key may use); a change is
  // kept for the session and reported to onChange. Returns reload(select) to call after a change.
  function galleryPicker(select, onChange) {
    let known = [DEFAULT_GALLERY];
    async function reload(choose) {
      select.dataset.state = "loading";
      let items = [{ name: DEFAULT_GALLERY, subject_count: null }];
      try {
        items = (await json("GET", "/galleries")).items;
      } catch (err) {
        if (err.status !== 404) notice(explain(err, "Listing the galleries"));
      }
      known = items.map((g) => g.name);
      let chosen = choose || currentGallery();
      if (!known.includes(chosen)) chosen = known.includes(DEFAULT_GALLERY) ? DEFAULT_GALLERY : known[0];
      if (chosen) setGallery(chosen);
      select.replaceChildren(...items.map((g) => el("option", {
        value: g.name,
        text: g.name + (g.subject_count === null || g.subject_count === undefined ? "" : " (" + g.subject_count +
          (g.subject_count === 1 ? " subject)" : " subjects)")),
      })));
      if (chosen) select.value = chosen;
      select.disabled = items.length === 0;
      select.dataset.state = "ready";
      return chosen;
    }
    select.addEventListener("change", () => {
      setGallery(select.value);
      onChange(select.value);
    });
    return reload;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function imageFiles(list) {
    return Array.from(list || []).filter((f) => f.type === "" || f.type.startsWith("image/"));
  }

  // A drop zone (and its file input): calls onFiles with the image files dropped or chosen.
  function dropZone(zone, input, onFiles) {
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      const files = imageFiles(event.dataTransfer && event.dataTransfer.files);
      if (files.length) onFiles(files);
    });
    if (input) {
      input.addEventListener("change", () => {
        const files = imageFiles(input.files);
        input.value = "";
        if (files.length) onFiles(files);
      });
    }
  }

  function showKeyState() {
    const state = document.getElementById("key-state");
    state.textContent = apiKey() ? "key kept for this browser session" : "no key";
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("key-form");
    const input = document.getElementById("api-key");
    input.value = apiKey();
    showKeyState();
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY, input.value.trim());
      showKeyState();
      notice("");
      document.dispatchEvent(new CustomEvent("lrface:key"));
    });
    document.getElementById("key-forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      input.value = "";
      showKeyState();
      document.dispatchEvent(new CustomEvent("lrface:key"));
    });
  });

  window.lrface = {
    ApiError, apiKey, request, json, explain, notice, subjectsPath, el, dropZone,
    DEFAULT_GALLERY, currentGallery, setGallery, galleryPicker,
  };
})();
