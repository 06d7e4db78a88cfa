// The gallery page: the galleries (choose, create, delete), the chosen one's subjects with thumbnails
// of their stored chips, enrolment by drag-and-drop or the file picker, deletion of a subject or a
// face. Everything goes through the JSON API.
"use strict";

(function () {
  const { json, request, explain, notice, subjectsPath, el, dropZone, DEFAULT_GALLERY, currentGallery, galleryPicker } =
    window.lrface;
  const PAGE = 24;
  const MAX_THUMBS = 12;
  let offset = 0;
  let shown = 0; // which load() the list belongs to: an answer for an older one (another gallery) is dropped
  const blobUrls = [];

  function releaseThumbnails() {
    while (blobUrls.length) URL.revokeObjectURL(blobUrls.pop());
  }

  // The stored HR chip (150 px) when kept, else the canonical chip (at most 64 px).
  async function chipUrl(subjectId, faceId, gallery) {
    const base = subjectsPath(subjectId, gallery) + "/faces/" + faceId + "/chip?kind=";
    let response;
    try {
      response = await request("GET", base + "hr");
    } catch (err) {
      if (err.status !== 404) throw err;
      response = await request("GET", base + "canonical");
    }
    const url = URL.createObjectURL(await response.blob());
    blobUrls.push(url);
    return url;
  }

  // The outcome goes to the line under the drop zone and to the banner (seen from any subject card).
  function say(message, kind) {
    document.getElementById("enrol-result").textContent = message;
    notice(message, kind);
  }

  async function enrol(subjectId, files, gallery = currentGallery()) {
    const detect = document.getElementById("enrol-detect").checked;
    const body = new FormData();
    for (const file of files) body.append("images", file, file.name);
    body.append("detect", detect ? "true" : "false");
    say("Enrolling " + files.length + " photo(s) of " + subjectId + "…", "info");
    try {
      const answer = await json("POST", subjectsPath(subjectId, gallery) + "/faces", body);
      const added = answer.faces.filter((f) => f.created).length;
      const already = answer.faces.length - added;
      const where = gallery === DEFAULT_GALLERY ? "" : " in gallery " + gallery;
      say("Enrolled " + added + " face(s) of " + subjectId + where +
        (already ? " (" + already + " already enrolled)" : "") + ".", "info");
      await load(true);
      await reloadGalleries(); // the subject counts in the gallery selector
    } catch (err) {
      say(explain(err, "Enrolling " + subjectId), "error");
    }
  }

  async function remove(path, what) {
    if (!window.confirm("Delete " + what + "? This cannot be undone.")) return;
    try {
      await json("DELETE", path);
      notice("Deleted " + what + ".", "info");
      await load(true);
      await reloadGalleries();
    } catch (err) {
      notice(explain(err, "Deleting " + what));
    }
  }

  async function fillFaces(card, subjectId, gallery) {
    const holder = card.querySelector(".faces");
    const subject = await json("GET", subjectsPath(subjectId, gallery));
    for (const face of subject.faces.slice(0, MAX_THUMBS)) {
      const figure = el("figure", { class: "thumb", "data-face-id": String(face.face_id) });
      const img = el("img", { alt: subjectId + ", face " + face.face_id, title: "face " + face.face_id });
      const del = el("button", { type: "button", class: "delete-face", title: "Delete this face", text: "×" });
      del.addEventListener("click", () =>
        remove(subjectsPath(subjectId, gallery) + "/faces/" + face.face_id, "face " + face.face_id + " of " + subjectId));
      figure.append(img, del);
      holder.append(figure);
      chipUrl(subjectId, face.face_id, gallery).then((url) => { img.src = url; }).catch(() => { img.alt = "no chip"; });
    }
    if (subject.faces.length > MAX_THUMBS) {
      holder.append(el("span", { class: "muted", text: "+" + (subject.faces.length - MAX_THUMBS) + " more" }));
    }
  }

  function subjectCard(item, gallery) {
    const template = document.getElementById("subject-template");
    const card = template.content.firstElementChild.cloneNode(true);
    card.dataset.subjectId = item.subject_id;
    card.dataset.gallery = gallery;
    card.querySelector(".name").textContent = item.subject_id;
    card.querySelector(".count").textContent = item.face_count + (item.face_count === 1 ? " face" : " faces");
    card.querySelector(".delete-subject").addEventListener("click", () =>
      remove(subjectsPath(item.subject_id, gallery), item.subject_id + " and all their faces"));
    dropZone(card, null, (files) => enrol(item.subject_id, files, gallery));
    return card;
  }

  async function load(reset) {
    const list = document.getElementById("subjects");
    const mine = ++shown;
    const gallery = currentGallery();
    list.dataset.state = "loading"; // "ready" once the page of subjects is shown
    if (reset) {
      offset = 0;
      releaseThumbnails();
      list.replaceChildren();
    }
    try {
      const page = await json("GET", subjectsPath(undefined, gallery) + "?offset=" + offset + "&limit=" + PAGE);
      if (mine !== shown) return; // another gallery (or page) was asked for meanwhile
      document.getElementById("gallery-count").textContent =
        page.total + (page.total === 1 ? " subject" : " subjects");
      document.getElementById("subjects-empty").hidden = page.total > 0;
      for (const item of page.items) {
        const card = subjectCard(item, gallery);
        list.append(card);
        fillFaces(card, item.subject_id, gallery).catch((err) => notice(explain(err, "Loading " + item.subject_id)));
      }
      offset += page.items.length;
      document.getElementById("more").hidden = offset >= page.total;
      list.dataset.state = "ready";
    } catch (err) {
      if (mine !== shown) return;
      list.dataset.state = "error";
      notice(explain(err, "Loading the gallery"));
    }
  }

  const select = document.getElementById("gallery-select");
  const deleteGallery = document.getElementById("delete-gallery");
  const pick = galleryPicker(select, () => {
    showGallery();
    load(true);
  });

  function showGallery() {
    const name = currentGallery();
    deleteGallery.hidden = name === DEFAULT_GALLERY;
    deleteGallery.textContent = "Delete gallery " + name;
  }

  async function reloadGalleries(choose) {
    await pick(choose);
    showGallery();
  }

  const galleryForm = document.getElementById("gallery-form");
  const galleryName = document.getElementById("new-gallery");
  galleryForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = galleryName.value.trim();
    if (!name || !galleryName.checkValidity()) {
      notice("A gallery name is 1-128 of A-Z a-z 0-9 . _ - and starts with a letter or digit.", "error");
      return;
    }
    try {
      const response = await request("PUT", "/galleries/" + encodeURIComponent(name));
      galleryName.value = "";
      await reloadGalleries(name);
      await load(true); // the page shows the new gallery before it says so
      notice((response.status === 201 ? "Created gallery " : "Gallery already there: ") + name + ".", "info");
    } catch (err) {
      notice(explain(err, "Creating gallery " + name));
    }
  });

  deleteGallery.addEventListener("click", async () => {
    const name = currentGallery();
    if (!window.confirm("Delete gallery " + name + " with all its subjects and faces? This cannot be undone.")) return;
    try {
      const answer = await json("DELETE", "/galleries/" + encodeURIComponent(name));
      await reloadGalleries(DEFAULT_GALLERY);
      await load(true);
      notice("Deleted gallery " + name + " (" + answer.deleted_subjects + " subjects, " + answer.deleted_faces +
        " faces).", "info");
    } catch (err) {
      notice(explain(err, "Deleting gallery " + name));
    }
  });

  const form = document.getElementById("enrol-form");
  const nameInput = document.getElementById("new-subject");
  form.addEventListener("submit", (event) => event.preventDefault());
  dropZone(document.getElementById("enrol-drop"), document.getElementById("enrol-files"), (files) => {
    const name = nameInput.value.trim();
    if (!name || !nameInput.checkValidity()) {
      say("Enter the person's name first (letters, digits, . _ -; it starts with a letter or digit).", "error");
      nameInput.focus();
      return;
    }
    enrol(name, files);
  });
  document.getElementById("refresh").addEventListener("click", async () => {
    await reloadGalleries();
    await load(true);
  });
  document.getElementById("more").addEventListener("click", () => load(false));
  document.addEventListener("lrface:key", async () => {
    await reloadGalleries();
    await load(true);
  });
  reloadGalleries().then(() => load(true));
})();
