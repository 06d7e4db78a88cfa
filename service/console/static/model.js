// The model card page: GET /model/card (keyed) and GET /readyz (what this process serves now).
"use strict";

(function () {
  const { json, explain, notice, el } = window.lrface;

  function pct(x) {
    return (100 * Number(x)).toFixed(1) + "%";
  }

  function facts(list, pairs) {
    list.replaceChildren();
    for (const [term, value] of pairs) {
      if (value === undefined || value === null || value === "") continue;
      list.append(el("dt", { text: term }), el("dd", { text: String(value) }));
    }
  }

  function table(node, head, rows) {
    node.replaceChildren();
    const thead = el("thead");
    thead.append(el("tr", {}, ...head.map((h) => el("th", { text: h }))));
    const tbody = el("tbody");
    for (const row of rows) tbody.append(el("tr", {}, ...row.map((c) => el("td", { text: String(c) }))));
    node.append(thead, tbody);
  }

  // "lr-lr@lr16": 0.904 → rows by condition (lr16), columns by pair kind (lr-lr).
  function accuracyRows(results) {
    const kinds = [];
    const byCondition = new Map();
    for (const [key, value] of Object.entries(results || {})) {
      const match = /^([a-z]+-[a-z]+)@(.+)$/.exec(key);
      if (!match || typeof value !== "number") continue;
      if (!kinds.includes(match[1])) kinds.push(match[1]);
      if (!byCondition.has(match[2])) byCondition.set(match[2], {});
      byCondition.get(match[2])[match[1]] = value;
    }
    const label = (c) => c.replace(/^lr(\d+)$/, "$1 px").replace(/^surveillance(\d+)$/, "surveillance $1 px");
    const rows = [...byCondition.entries()].map(([c, v]) => [label(c), ...kinds.map((k) => (k in v ? pct(v[k]) : ""))]);
    return { head: ["face size", ...kinds.map((k) => k.toUpperCase().replace("-", "–"))], rows };
  }

  async function load() {
    let card;
    try {
      card = await json("GET", "/model/card");
    } catch (err) {
      notice(explain(err, "Loading the model card"));
      return;
    }
    notice("");
    let ready = {};
    try {
      ready = await json("GET", "/readyz");
    } catch (_) { /* not ready yet: the card alone */ }

    document.getElementById("model-title").textContent = card.name + " " + card.version;
    facts(document.getElementById("model-facts"), [
      ["model version", card.name + ":" + card.version],
      ["weights (SHA-256)", card.onnx_sha256],
      ["input", card.input_size + " × " + card.input_size + " px, " + card.color],
      ["embedding", card.embedding_size + " values, " + card.similarity + " similarity"],
      ["serving now", ready.embedders],
      ["runtime", ready.providers ? ready.providers.join(", ") : null],
      ["gallery", ready.gallery_faces !== undefined
        ? ready.gallery_faces + " faces, " + ready.index_kind + " index on " + ready.index_device : null],
    ]);

    const thresholdRows = [["student, default (best accuracy on validation pairs)", card.threshold.toFixed(3)]];
    if (card.gallery_from_teacher) {
      thresholdRows.unshift(["student probe against the gallery (the teacher's centred HR embeddings; /identify, /verify of a subject)",
        card.gallery_from_teacher.threshold.toFixed(3)]);
      thresholdRows[1][0] = "student, two probes compared (/verify of two faces; best accuracy on validation pairs)";
    }
    for (const [name, value] of Object.entries(card.thresholds || {})) {
      thresholdRows.push(["student, " + name.replace("far_", "FAR ").replace("_", " "), Number(value).toFixed(3)]);
    }
    const views = (card.gallery_from_teacher || {}).distant_views;
    if (views) {
      thresholdRows.unshift(["student probe against the gallery with its distant views (a chip or box below the fusion)",
        views.threshold.toFixed(3)]);
    }
    if (card.routing) {
      if (card.routing.chip_fusion) {
        thresholdRows.push(["both models fused, a chip or box (/identify, /verify of a subject)", card.routing.chip_fusion.threshold.toFixed(3)]);
      }
      if (card.routing.detected_fusion) {
        thresholdRows.push(["both models fused, a face the detector found", card.routing.detected_fusion.threshold.toFixed(3)]);
      }
      thresholdRows.push(["teacher (" + card.routing.teacher + ")", card.routing.threshold.toFixed(3)]);
    }
    table(document.getElementById("thresholds-table"), ["operating point", "cosine threshold"], thresholdRows);

    const routing = document.getElementById("routing");
    const routingTable = document.getElementById("routing-table");
    if (card.routing) {
      const serving = ready.teacher_from_px !== undefined && ready.teacher_from_px === null
        ? " This process serves every face with the student (the teacher is off or dlib is missing)." : "";
      const r = card.routing;
      const chipSwitch = r.chip_min_face_px ?? r.min_face_px;
      const fused = r.chip_fusion && card.gallery_from_teacher;
      const detected = r.detected_min_face_px
        ? " Faces the detector finds go to the teacher from " + r.detected_min_face_px + " px" +
          (r.detected_fusion && card.gallery_from_teacher
            ? ", both models fused below that" + (r.detected_fusion.student_on_both_chips ? ", the student on both chips (landmarks' and dlib's)" : "") +
              (r.detected_fusion.teacher_mirrored ? ", the teacher with the mirror image too" : "") + "."
            : ", the student below.")
        : "";
      const bySize = (r.chip_validation || {}).by_size;
      routing.textContent = "Chips and boxes of " + chipSwitch + " px and more go to the teacher (" + r.teacher_version + ")" +
        (fused ? ", from " + r.chip_fusion.from_face_px + " px both models fused, smaller ones to the student."
               : ", smaller ones to the student.") + detected +
        " Chosen on validation people: rank-1 of chips by side below." + serving;
      if (bySize) {
        table(routingTable, ["chip side", "student rank-1", "fused rank-1", "teacher rank-1"], Object.entries(bySize).map(([s, v]) => [
          s + " px", v.rank1_student.toFixed(1) + "%", v.rank1_fused !== undefined ? v.rank1_fused.toFixed(1) + "%" : "",
          v.rank1_teacher.toFixed(1) + "%",
        ]));
      } else {
        const rank1 = (r.validation || {}).validation_rank1 || {};
        const sizes = Object.keys(rank1.student || {});
        table(routingTable, ["face size", "student rank-1", "teacher rank-1"], sizes.map((s) => [
          s.replace(/^lr(\d+)$/, "$1 px").replace("hr", "HR photo"),
          pct(rank1.student[s]), rank1.teacher && s in rank1.teacher ? pct(rank1.teacher[s]) : "",
        ]));
      }
    } else {
      routing.textContent = "The student serves every face (the card routes none to a teacher).";
      routingTable.replaceChildren();
    }

    const test = (card.accuracy || {}).lfw_view1_test || {};
    const { head, rows } = accuracyRows(test);
    document.getElementById("accuracy-note").textContent = rows.length
      ? "Verification accuracy on " + (test.protocol || "LFW View 1 test") + ", student alone" +
        (typeof test["hr-hr"] === "number" ? "; HR–HR " + pct(test["hr-hr"]) : "") +
        (test.command ? ". Measured by: " + test.command : "") + "."
      : "The card records no accuracy.";
    table(document.getElementById("accuracy-table"), head, rows);

    const training = card.training || {};
    facts(document.getElementById("training"), [
      ["data", training.data],
      ["data licence", training.data_licence],
      ["teacher", training.teacher_version || training.teacher],
      ["teacher licence", training.teacher_licence],
      ["run", training.run],
    ]);
  }

  document.addEventListener("lrface:key", load);
  load();
})();
