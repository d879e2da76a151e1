/* Arbiter annotate page: ranking, pairwise and thumbs, by keyboard, mouse and touch.
 * Vanilla JS, no build step, no outside fetch. The server renders the page (responses already
 * sanitised); this script only collects the judgement and posts it, idempotently. */
(function () {
  "use strict";

  var configEl = document.getElementById("annotate-config");
  if (!configEl) return;
  var config = JSON.parse(configEl.textContent);
  var root = document.getElementById("annotate");
  var form = document.getElementById("annotate-form");
  var statusEl = document.getElementById("status");
  var errorEl = document.getElementById("error");

  function $(sel, el) { return (el || document).querySelector(sel); }
  function $$(sel, el) { return Array.prototype.slice.call((el || document).querySelectorAll(sel)); }
  function say(text) { if (statusEl) statusEl.textContent = text; }
  function fail(text) { if (errorEl) errorEl.textContent = text; }

  // ---------------------------------------------------------------- undo banner countdown
  var undoForm = document.getElementById("undo-form");
  if (undoForm) {
    var until = Date.parse(undoForm.getAttribute("data-undo-until"));
    var left = document.getElementById("undo-left");
    var tick = function () {
      var s = Math.max(0, Math.round((until - Date.now()) / 1000));
      if (s <= 0) { undoForm.hidden = true; return; }
      if (left) left.textContent = "for " + s + " s";
      window.setTimeout(tick, 1000);
    };
    tick();
  }

  // ---------------------------------------------------------------- guidelines open state
  var guidelines = document.getElementById("guidelines");
  if (guidelines) {
    try {
      var key = "arbiter:guidelines-seen:" + config.project;
      if (!window.localStorage.getItem(key)) { guidelines.open = true; window.localStorage.setItem(key, "1"); }
    } catch (e) { /* storage may be off */ }
  }

  if (!form || !config.item) {
    document.addEventListener("keydown", function (e) {
      if (isTyping(e.target) || e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === "u" && undoForm && !undoForm.hidden) { e.preventDefault(); undoForm.requestSubmit(); }
    });
    return;
  }

  // ---------------------------------------------------------------- time on task (visible time only)
  var visibleMs = 0;
  var visibleSince = document.visibilityState === "visible" ? performance.now() : null;
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") visibleSince = performance.now();
    else if (visibleSince !== null) { visibleMs += performance.now() - visibleSince; visibleSince = null; }
  });
  function timeSpentMs() {
    var t = visibleMs + (visibleSince !== null ? performance.now() - visibleSince : 0);
    return Math.max(1, Math.round(t));
  }

  // ---------------------------------------------------------------- the item is held for a while only
  var expiresAt = Date.parse(config.lease_expires_at || "");
  if (!isNaN(expiresAt)) {
    var warnAt = expiresAt - Date.now() - 60 * 1000;
    window.setTimeout(function () {
      if (!submitting) fail("This item is held for you for one more minute: submit soon, or it goes back to the pool.");
    }, Math.max(0, warnAt));
    window.setTimeout(function () {
      if (!submitting) fail("This item was held for you until " + new Date(expiresAt).toLocaleTimeString() + " and has gone back to the pool. Reload for the next item.");
    }, Math.max(0, expiresAt - Date.now()));
  }

  // ---------------------------------------------------------------- idempotency key, one per lease
  function randomKey() {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes); // works on plain http too (randomUUID needs a secure context)
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }
  var keyName = "arbiter:submit-key:" + config.lease;
  var idempotencyKey = null;
  try { idempotencyKey = window.sessionStorage.getItem(keyName); } catch (e) { /* ignore */ }
  if (!idempotencyKey) {
    idempotencyKey = randomKey();
    try { window.sessionStorage.setItem(keyName, idempotencyKey); } catch (e) { /* ignore */ }
  }

  // ---------------------------------------------------------------- drafts: typed text survives a reload
  var draftName = "arbiter:draft:" + config.lease;
  var saved = false;
  var textBoxes = ["comment", "demonstration"].map(function (id) { return document.getElementById(id); });
  try {
    var draft = JSON.parse(window.sessionStorage.getItem(draftName) || "{}");
    textBoxes.forEach(function (box) { if (draft[box.id]) box.value = draft[box.id]; });
    if (draft.demonstration) document.getElementById("demonstration-box").open = true;
  } catch (e) { /* ignore */ }
  textBoxes.forEach(function (box) {
    box.addEventListener("input", function () {
      var d = {};
      textBoxes.forEach(function (b) { if (b.value) d[b.id] = b.value; });
      try { window.sessionStorage.setItem(draftName, JSON.stringify(d)); } catch (e) { /* ignore */ }
    });
  });
  window.addEventListener("beforeunload", function (e) {
    if (saved) return;
    if (textBoxes.some(function (b) { return b.value.trim(); })) { e.preventDefault(); e.returnValue = ""; }
  });

  // ---------------------------------------------------------------- folding long responses
  $$(".response-body").forEach(function (body) {
    var toggle = body.nextElementSibling;
    if (!toggle || !toggle.classList.contains("fold-toggle")) return;
    if (body.scrollHeight <= config.fold_px * 1.25) return;
    var set = function (folded) {
      body.classList.toggle("folded", folded);
      toggle.setAttribute("aria-expanded", folded ? "false" : "true");
      toggle.textContent = folded ? "Show all" : "Show less";
    };
    toggle.hidden = false;
    set(true);
    toggle.addEventListener("click", function () { set(!body.classList.contains("folded")); });
  });

  // ---------------------------------------------------------------- per-kind state
  var kind = config.kind;
  var selected = null; // the card keys act on (ranking, binary)

  function select(card, focus) {
    $$(".is-selected").forEach(function (el) { el.classList.remove("is-selected"); });
    selected = card;
    if (card) {
      card.classList.add("is-selected");
      if (focus !== false) card.focus({ preventScroll: true });
      card.scrollIntoView({ block: "nearest" });
    }
  }
  function cardByLabel(n) { return $('[data-label="' + n + '"]', root); }

  // ---- ranking
  var ranking = document.getElementById("ranking");
  function rankCards() { return $$(".rank-card", ranking); }
  function renumber(announceCard) {
    var cards = rankCards();
    var rank = 0;
    cards.forEach(function (card, i) {
      var tie = $(".tie-box", card);
      var tied = i > 0 && tie && tie.checked;
      if (!tied) rank = i + 1;
      $(".rank-number", card).textContent = String(rank);
      card.setAttribute("data-rank", String(rank));
      if (tie) tie.closest(".tie").hidden = i === 0;
      $(".move-up", card).disabled = i === 0;
      $(".move-down", card).disabled = i === cards.length - 1;
    });
    var summary = document.getElementById("ranking-summary");
    if (summary) {
      summary.textContent = "Your ranking: " + cards.map(function (c) {
        return "#" + c.getAttribute("data-rank") + " response " + c.getAttribute("data-label");
      }).join(", ") + ".";
    }
    if (announceCard) {
      say("Response " + announceCard.getAttribute("data-label") + " is now rank " + announceCard.getAttribute("data-rank") + ".");
    }
  }
  function move(card, delta) {
    var cards = rankCards();
    var i = cards.indexOf(card);
    var j = i + delta;
    if (i < 0 || j < 0 || j >= cards.length) return;
    if (delta < 0) ranking.insertBefore(card, cards[j]);
    else ranking.insertBefore(card, cards[j].nextSibling);
    renumber(card);
  }
  function rankingPayload() {
    // Groups of candidate ids, best first; a group of several is a tie.
    var groups = [];
    rankCards().forEach(function (card, i) {
      var id = Number(card.getAttribute("data-candidate-id"));
      var tie = $(".tie-box", card);
      if (i > 0 && tie && tie.checked) groups[groups.length - 1].push(id);
      else groups.push([id]);
    });
    return formatRanking(groups);
  }

  if (ranking) {
    renumber(null);
    ranking.addEventListener("click", function (e) {
      var card = e.target.closest(".rank-card");
      if (!card) return;
      if (e.target.closest(".move-up")) { move(card, -1); select(card, false); }
      else if (e.target.closest(".move-down")) { move(card, 1); select(card, false); }
      else if (e.target.closest(".tie-box")) { renumber(card); }
      else if (!e.target.closest("button, a, input, label")) { select(card); } // then arrows move it
    });
    setupDrag();
  }

  // Drag and drop with pointer events: one code path for mouse, pen and touch.
  function setupDrag() {
    var drag = null;
    ranking.addEventListener("pointerdown", function (e) {
      var handle = e.target.closest(".drag-handle, .rank-head");
      if (!handle || e.target.closest("button, input, label, a")) return;
      if (e.pointerType === "mouse" && e.button !== 0) return;
      var card = handle.closest(".rank-card");
      drag = { card: card, pointerId: e.pointerId, startY: e.clientY, active: false, lastY: e.clientY };
      try { handle.setPointerCapture(e.pointerId); } catch (err) { /* ignore */ }
      drag.captor = handle;
      e.preventDefault();
    });
    ranking.addEventListener("pointermove", function (e) {
      if (!drag || e.pointerId !== drag.pointerId) return;
      var dy = e.clientY - drag.startY;
      if (!drag.active) {
        if (Math.abs(dy) < 4) return;
        drag.active = true;
        drag.card.classList.add("dragging");
        ranking.classList.add("is-dragging");
        select(drag.card, false);
      }
      drag.lastY = e.clientY;
      var card = drag.card;
      var before = card.offsetTop;
      // Swap with neighbours while the pointer is past their middle (several at once on a fast move).
      for (var guard = 0; guard < 50; guard++) {
        var next = card.nextElementSibling;
        var prev = card.previousElementSibling;
        if (next && e.clientY > midY(next)) ranking.insertBefore(next, card);
        else if (prev && e.clientY < midY(prev)) ranking.insertBefore(card, prev);
        else break;
      }
      var shift = card.offsetTop - before;
      if (shift) { drag.startY += shift; renumber(null); }
      card.style.transform = "translateY(" + (e.clientY - drag.startY) + "px)";
      // Scroll when the pointer nears the top or bottom of the window.
      if (e.clientY < 40) window.scrollBy(0, -20);
      else if (e.clientY > window.innerHeight - 40) window.scrollBy(0, 20);
    });
    function end(e) {
      if (!drag || e.pointerId !== drag.pointerId) return;
      var card = drag.card;
      card.style.transform = "";
      card.classList.remove("dragging");
      ranking.classList.remove("is-dragging");
      if (drag.active) renumber(card);
      try { drag.captor.releasePointerCapture(e.pointerId); } catch (err) { /* ignore */ }
      drag = null;
    }
    ranking.addEventListener("pointerup", end);
    ranking.addEventListener("pointercancel", end);
    function midY(el) { var r = el.getBoundingClientRect(); return r.top + r.height / 2; }
  }

  // ---- pairwise
  var choice = null;
  var choiceButtons = $$(".choice");
  function choose(value) {
    choice = value;
    choiceButtons.forEach(function (b) { b.setAttribute("aria-pressed", String(b.getAttribute("data-choice") === value)); });
    var strength = document.getElementById("strength");
    if (strength) {
      var off = value === "tie" || value === "both_bad";
      strength.disabled = off;
      if (off) $$('input[name="strength"]', strength).forEach(function (r) { r.checked = false; });
    }
    var btn = choiceButtons.filter(function (b) { return b.getAttribute("data-choice") === value; })[0];
    say("Chosen: " + (btn ? btn.textContent.replace(/\s+\S+$/, "") : value) + ". Press Enter to submit.");
  }
  choiceButtons.forEach(function (b) {
    b.addEventListener("click", function () { choose(b.getAttribute("data-choice")); });
  });
  function setStrength(value) {
    var r = document.getElementById("strength-" + value);
    if (r && !r.disabled && !document.getElementById("strength").disabled) r.checked = true;
  }
  function pairwisePayload() {
    if (!choice) return null;
    var s = $('input[name="strength"]:checked');
    return { choice: choice, strength: s && choice !== "tie" && choice !== "both_bad" ? s.value : null };
  }

  // ---- binary
  var votes = {};
  function binaryCards() { return $$(".binary-card"); }
  function vote(card, value) {
    var id = card.getAttribute("data-candidate-id");
    votes[id] = value;
    $$(".thumb", card).forEach(function (b) { b.setAttribute("aria-pressed", String(b.getAttribute("data-vote") === value)); });
    card.classList.toggle("voted-up", value === "up");
    card.classList.toggle("voted-down", value === "down");
    say("Response " + card.getAttribute("data-label") + ": " + (value === "up" ? "good" : "bad") + ".");
  }
  binaryCards().forEach(function (card) {
    $$(".thumb", card).forEach(function (b) {
      b.addEventListener("click", function () { vote(card, b.getAttribute("data-vote")); select(card, false); });
    });
  });
  function binaryPayload() {
    var cards = binaryCards();
    var missing = cards.filter(function (c) { return !votes[c.getAttribute("data-candidate-id")]; });
    if (missing.length) return null;
    return formatBinary(cards.map(function (card) {
      var id = card.getAttribute("data-candidate-id");
      return {
        candidate: Number(id),
        label: votes[id] === "up",
        // only the tags that explain the vote given (a changed vote hides the other side's tags)
        reasons: $$('input[name="reasons-' + id + '"]:checked', card)
          .filter(function (i) { return i.getAttribute("data-vote") === votes[id]; })
          .map(function (i) { return i.value; }),
      };
    }));
  }
  if (kind === "binary") select(binaryCards()[0], false);

  // ---------------------------------------------------------------- payload shapes (see feedback/services/payloads.py)
  function formatRanking(groups) {
    return { ranking: groups };
  }
  function formatBinary(rows) {
    var labels = {};
    var reasons = {};
    rows.forEach(function (r) {
      labels[String(r.candidate)] = r.label ? "up" : "down";
      if (r.reasons.length) reasons[String(r.candidate)] = r.reasons;
    });
    return { labels: labels, reasons: reasons };
  }

  // ---------------------------------------------------------------- submit, retried safely
  var submitting = false;
  function payload() {
    if (kind === "ranking") return rankingPayload();
    if (kind === "pairwise") return pairwisePayload();
    return binaryPayload();
  }
  function sleep(ms) { return new Promise(function (r) { window.setTimeout(r, ms); }); }

  function submit() {
    if (submitting) return;
    fail("");
    var p = payload();
    if (p === null) {
      fail(kind === "pairwise" ? "Choose A, B, tie or both bad first (keys 1–4)." : "Give every response a thumbs up or down first (keys y / n).");
      return;
    }
    var body = {
      item_id: config.item,
      lease_id: config.lease,
      payload: p,
      idempotency_key: idempotencyKey,
      time_spent_ms: timeSpentMs(),
      comment: document.getElementById("comment").value.trim(),
      flags: $$('input[name="flags"]:checked').map(function (i) { return i.value; }),
      demonstration: document.getElementById("demonstration").value.trim(),
      order_shown: config.order_shown,
    };
    submitting = true;
    root.classList.add("is-submitting");
    document.getElementById("submit").disabled = true;
    say("Saving…");
    send(body, 0);
  }

  function send(body, attempt) {
    fetch(config.urls.submit, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": config.csrf, "Accept": "application/json" },
      body: JSON.stringify(body),
    }).then(function (resp) {
      return resp.json().catch(function () { return null; }).then(function (data) { return { resp: resp, data: data }; });
    }).then(function (r) {
      if (r.resp.status >= 500 || r.resp.status === 429) throw new Error("server " + r.resp.status);
      if (r.resp.ok && r.data && r.data.annotation_id) {
        saved = true;
        try {
          window.sessionStorage.removeItem(keyName);
          window.sessionStorage.removeItem(draftName);
        } catch (e) { /* ignore */ }
        say("Saved.");
        window.location.assign(r.data.next || config.urls.next);
        return;
      }
      if (!r.data) { done("Unexpected reply from the server (" + r.resp.status + "); your answer is still here. Reload the page in another tab to check your session, then submit again."); return; }
      done(r.data.message || ("Could not save (" + r.resp.status + ")."));
    }).catch(function (err) {
      if (attempt >= 5) { done("Could not reach the server; your answer is still here. Try again."); return; }
      var wait = 500 * Math.pow(2, attempt);
      say("Saving… the server did not answer, trying again in " + Math.round(wait / 1000 * 10) / 10 + " s.");
      sleep(wait).then(function () { send(body, attempt + 1); });
    });
  }
  function done(message) {
    submitting = false;
    root.classList.remove("is-submitting");
    document.getElementById("submit").disabled = false;
    say("");
    fail(message);
  }
  form.addEventListener("submit", function (e) { e.preventDefault(); submit(); });

  // ---------------------------------------------------------------- skip dialog
  var skipDialog = document.getElementById("skip-dialog");
  function openSkip() {
    if (skipDialog && !skipDialog.open) { skipDialog.showModal(); var r = $('input[name="reason"]:checked', skipDialog); if (r) r.focus(); }
  }
  document.getElementById("skip-open").addEventListener("click", openSkip);
  // Skipping or undoing leaves the page on purpose: no "unsaved changes" prompt for those.
  document.getElementById("skip-form").addEventListener("submit", function () { saved = true; });
  if (undoForm) undoForm.addEventListener("submit", function () { saved = true; });
  document.getElementById("skip-cancel").addEventListener("click", function () { skipDialog.close(); });

  // ---------------------------------------------------------------- keyboard
  function isTyping(el) {
    if (!el) return false;
    if (el.isContentEditable) return true;
    var tag = el.tagName;
    if (tag === "TEXTAREA" || tag === "SELECT") return true;
    return tag === "INPUT" && !/^(checkbox|radio|button|submit)$/i.test(el.type);
  }

  document.addEventListener("keydown", function (e) {
    if (e.defaultPrevented || e.isComposing) return;
    if (skipDialog && skipDialog.open) return; // the dialog handles its own keys
    var typing = isTyping(e.target);
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); return; }
    if (typing) {
      if (e.key === "Escape") { e.target.blur(); e.preventDefault(); }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var onControl = e.target.closest && e.target.closest("button, a, summary, input");
    var k = e.key;

    if (k === "Enter") {
      if (onControl) return; // let the focused control do its own thing
      e.preventDefault(); submit(); return;
    }
    if (k === "?") { e.preventDefault(); if (guidelines) { guidelines.open = !guidelines.open; if (guidelines.open) guidelines.scrollIntoView({ block: "nearest" }); } return; }
    if (k === "s") { e.preventDefault(); openSkip(); return; }
    if (k === "u") { if (undoForm && !undoForm.hidden) { e.preventDefault(); undoForm.requestSubmit(); } return; }
    if (k === "c") { e.preventDefault(); document.getElementById("comment").focus(); return; }
    if (k === "b") {
      e.preventDefault();
      var box = document.getElementById("demonstration-box");
      box.open = true; document.getElementById("demonstration").focus(); return;
    }

    if (kind === "pairwise") {
      var map = { "1": "A", "2": "B", "3": "tie", "4": "both_bad" };
      if (map[k] && document.getElementById("choice-" + map[k])) { e.preventDefault(); choose(map[k]); return; }
      if (k === "q") { e.preventDefault(); setStrength("slight"); return; }
      if (k === "w") { e.preventDefault(); setStrength("clear"); return; }
      return;
    }
    if (/^[1-9]$/.test(k)) {
      var card = cardByLabel(k);
      if (card) { e.preventDefault(); select(card); say("Response " + k + " picked."); }
      return;
    }
    if (kind === "ranking") {
      if (!selected) return;
      if (k === "ArrowUp" || k === "ArrowDown") {
        e.preventDefault();
        move(selected, k === "ArrowUp" ? -1 : 1);
        selected.focus({ preventScroll: true });
        selected.scrollIntoView({ block: "nearest" });
        return;
      }
      if (k === "t") {
        var tie = $(".tie-box", selected);
        if (tie && !tie.closest(".tie").hidden) { e.preventDefault(); tie.checked = !tie.checked; renumber(selected); }
        return;
      }
      if (k === "Escape") { select(null); return; }
    }
    if (kind === "binary") {
      if (!selected) return;
      if (k === "y" || k === "n") {
        e.preventDefault();
        vote(selected, k === "y" ? "up" : "down");
        var cards = binaryCards();
        var nextOpen = cards.filter(function (c) { return !votes[c.getAttribute("data-candidate-id")]; })[0];
        if (nextOpen) select(nextOpen);
        return;
      }
      if (k === "ArrowDown" || k === "ArrowUp") {
        var list = binaryCards();
        var j = list.indexOf(selected) + (k === "ArrowDown" ? 1 : -1);
        if (list[j]) { e.preventDefault(); select(list[j]); }
      }
    }
  });
})();
