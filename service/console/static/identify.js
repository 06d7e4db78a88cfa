// The identify page: send a photo or frame to POST /identify, draw each face's box with its name and
// score, re-decide with the threshold sliders (a decision is "top score >= threshold", the API's own
// rule, applied again in the browser so the slider answers at once), and show each face as the model
// saw it. Works with answers that list `faces` and with the older one-face answer.
"use strict";

(function () {
  const { json, explain, notice, el, dropZone, ApiError, DEFAULT_GALLERY, currentGallery, galleryPicker } = window.lrface;
  const SVG = "http://www.w3.org/2000/svg";
  let current = null; // { faces, size: [w, h] }
  const thresholds = {}; // per kind of face (kindOf): the slider's value
  const defaults = {}; // per kind of face: the threshold the service used
  let photoUrl = null;

  // The answer as a list of faces: `faces` when the service gives it, else the one face of the older answer.
  function facesOf(answer) {
    if (Array.isArray(answer.faces)) return answer.faces;
    if (answer.outcome === "no_face") return [];
    return [{
      box: answer.box || null,
      face_px: answer.face_px,
      embedder: answer.embedder || "student",
      input: answer.input,
      operating_point: answer.operating_point,
      matches: answer.matches || [],
      threshold: answer.threshold,
      decision: answer.decision,
    }];
  }

  // Each kind of face has its own calibrated threshold: the model that embedded it and, for the student
  // and the fusion, whether the detector found it or it came as a chip or box (the teacher has one), at the
  // operating point the service decided at (the answer says which).
  const POINTS = { fpir_10: "; FPIR 10%", fpir_1: "; FPIR 1%", threshold: "; the threshold sent" };
  function kindOf(face) {
    const kind = face.embedder === "teacher" ? "teacher"
      : face.embedder + (face.input === "detected" ? ", detected face" : ", chip or box");
    return kind + (POINTS[face.operating_point] || "");
  }

  function decide(face) {
    const top = face.matches && face.matches[0];
    const threshold = thresholds[kindOf(face)] ?? face.threshold;
    return top && top.score >= threshold ? top.subject_id : null;
  }

  function fmt(x) {
    return Number(x).toFixed(3);
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    return node;
  }

  function drawBoxes() {
    const layer = document.getElementById("boxes");
    layer.replaceChildren();
    const [width, height] = current.size;
    layer.setAttribute("viewBox", "0 0 " + width + " " + height);
    const font = Math.max(10, Math.round(Math.max(width, height) / 48));
    const stroke = Math.max(1.5, font / 7);
    current.faces.forEach((face, i) => {
      if (!face.box) return;
      const [left, top, right, bottom] = face.box;
      const name = decide(face);
      const colour = name ? "#1b9e4b" : "#e07b00";
      layer.append(svg("rect", {
        x: left, y: top, width: right - left, height: bottom - top,
        fill: "none", stroke: colour, "stroke-width": stroke, class: "face-box",
      }));
      const best = face.matches && face.matches[0];
      const text = svg("text", {
        x: left, y: top > font * 1.2 ? top - stroke * 2 : bottom + font + stroke,
        "font-size": font, fill: colour, stroke: "#fff", "stroke-width": Math.max(2, font / 5),
        "paint-order": "stroke", "font-weight": "bold", "font-family": "sans-serif", class: "face-label",
      });
      text.textContent = (i + 1) + ". " + (name || "unknown") + (best ? " " + fmt(best.score) : "");
      layer.append(text);
      const overflow = left + text.getComputedTextLength() - width;
      if (overflow > 0) text.setAttribute("x", String(Math.max(0, left - overflow)));
    });
  }

  function faceEntry(face, i) {
    const name = decide(face);
    const threshold = thresholds[kindOf(face)] ?? face.threshold;
    const best = face.matches && face.matches[0];
    const entry = el("article", { class: "face " + (name ? "is-match" : "is-unknown") });
    const model = el("figure", { class: "model-input" });
    // A fused face's picture is the student's input; the teacher saw the same face (dlib's alignment of it
    // when the detector found it).
    const seer = face.embedder === "student+teacher" ? "student (fused with the teacher)" : face.embedder;
    if (face.input_png) {
      const img = el("img", { src: face.input_png, alt: "face " + (i + 1) + " as the model saw it", class: "pixelated" });
      const caption = el("figcaption", { class: "muted", text: "as the " + seer + " saw it" });
      img.addEventListener("load", () => {
        caption.textContent = "as the " + seer + " saw it (" + img.naturalWidth + " px)";
      });
      model.append(img, caption);
    } else {
      model.append(el("figcaption", { class: "muted", text: "this service does not return the model's input" }));
    }
    const lines = el("div", { class: "face-text" });
    const size = face.face_px ? Math.round(face.face_px) + " px" : "size unknown";
    lines.append(el("h3", { text: "Face " + (i + 1) + ": " + (name || "unknown") }));
    lines.append(el("p", { class: "muted", text: size + ", " + face.embedder + " model" +
      (face.detection_score !== undefined && face.detection_score !== null
        ? ", detection score " + fmt(face.detection_score) : "") }));
    if (best) {
      lines.append(el("p", { class: "decision", text: (name ? "match: " : "no match: ") + best.subject_id + " scores " +
        fmt(best.score) + (name ? " ≥ " : " < ") + "threshold " + fmt(threshold) }));
    } else {
      lines.append(el("p", { class: "decision", text: "the gallery is empty: nobody to compare with" }));
    }
    const list = el("ol", { class: "candidates" });
    for (const m of face.matches || []) {
      list.append(el("li", { text: m.subject_id + " " + fmt(m.score) }));
    }
    lines.append(list);
    entry.append(model, lines);
    return entry;
  }

  function render() {
    drawBoxes();
    const result = document.getElementById("result");
    result.replaceChildren();
    if (!current.faces.length) {
      result.append(el("p", { class: "decision", text: "No face found in this photo." }));
    }
    current.faces.forEach((face, i) => result.append(faceEntry(face, i)));
    if (current.faces.some((f) => !f.box)) {
      result.append(el("p", { class: "muted", text: "The service did not say where the face is: no box drawn." }));
    }
  }

  function sliders() {
    const holder = document.getElementById("thresholds");
    holder.replaceChildren();
    const spaces = [...new Set(current.faces.map(kindOf))];
    for (const space of spaces) {
      const id = "threshold-" + space.replace(/[^a-z+]+/g, "-");
      const value = el("output", { for: id, text: fmt(thresholds[space]) });
      const input = el("input", { id, type: "range", min: "-0.2", max: "1", step: "0.005", value: String(thresholds[space]) });
      input.addEventListener("input", () => {
        thresholds[space] = Number(input.value);
        value.textContent = fmt(thresholds[space]);
        render();
      });
      const reset = el("button", { type: "button", class: "quiet", text: "service's " + fmt(defaults[space]) });
      reset.addEventListener("click", () => {
        thresholds[space] = defaults[space];
        input.value = String(defaults[space]);
        value.textContent = fmt(defaults[space]);
        render();
      });
      holder.append(el("div", { class: "slider" },
        el("label", { for: id, text: "Threshold (" + space + ")" }), input, value, reset));
    }
  }

  async function post(file, detect) {
    const body = new FormData();
    body.append("image", file, file.name || "photo");
    body.append("top_k", document.getElementById("top-k").value || "5");
    body.append("detect", detect);
    body.append("include_input", "true");
    const point = document.getElementById("operating-point").value;
    if (point) body.append("operating_point", point);
    if (currentGallery() !== DEFAULT_GALLERY) body.append("gallery", currentGallery());
    return json("POST", "/identify", body);
  }

  async function identify(file) {
    const status = document.getElementById("status");
    const detect = document.getElementById("detect").value;
    status.textContent = "Identifying " + (file.name || "the photo") + "…";
    notice("");
    let answer;
    let note = "";
    try {
      try {
        answer = await post(file, detect);
      } catch (err) {
        // A service from before `detect=auto` knows true/false only: ask it for the largest face.
        if (!(detect === "auto" && err instanceof ApiError && err.status === 422 && /detect/.test(err.detail))) throw err;
        answer = await post(file, "true");
        note = " This service finds the largest face only.";
      }
    } catch (err) {
      status.textContent = "";
      notice(explain(err, "Identifying"));
      return;
    }
    if (photoUrl) URL.revokeObjectURL(photoUrl);
    photoUrl = URL.createObjectURL(file);
    const photo = document.getElementById("photo");
    await new Promise((resolve) => {
      photo.onload = resolve;
      photo.onerror = resolve;
      photo.src = photoUrl;
    });
    current = { faces: facesOf(answer), size: [photo.naturalWidth || 1, photo.naturalHeight || 1] };
    for (const face of current.faces) {
      if (!(kindOf(face) in defaults)) {
        defaults[kindOf(face)] = face.threshold;
        thresholds[kindOf(face)] = face.threshold;
      }
    }
    document.getElementById("result-section").hidden = false;
    sliders();
    render();
    const count = current.faces.length;
    const where = currentGallery() === DEFAULT_GALLERY ? "" : " Searched gallery " + currentGallery() + ".";
    status.textContent = (count === 1 ? "1 face" : count + " faces") + " in " + (file.name || "the photo") + "." +
      where + note;
  }

  const pick = galleryPicker(document.getElementById("gallery-select"), () => notice(""));
  document.addEventListener("lrface:key", () => pick());
  pick();

  dropZone(document.getElementById("probe-drop"), document.getElementById("probe-file"), (files) => identify(files[0]));
})();
