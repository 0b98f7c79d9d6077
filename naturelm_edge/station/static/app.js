// The station's page: polls the JSON API, draws charts as SVG, plays clips. No external assets.
"use strict";
const COLORS = ["#2f7d4f", "#c0612b", "#3867a8", "#a83865", "#8a7a20", "#5a3fa0", "#2a8c8c", "#777"];
let lastId = 0;

async function get(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(path + ": " + response.status);
  return response.json();
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function addEvents(events) {
  const body = document.querySelector("#events tbody");
  for (const e of events.slice().reverse()) {
    const row = document.createElement("tr");
    row.className = "new";
    row.dataset.id = e.id;
    cell(row, (e.start_utc || e.created_utc || "").replace("T", " ").slice(0, 19));
    cell(row, e.label || e.answer);
    cell(row, e.confidence.toFixed(2));
    cell(row, e.answered_by);
    cell(row, e.escalation_answer ? e.escalation_status + ": " + e.escalation_answer : e.escalation_status);
    const td = cell(row, "");
    if (e.clip) {
      const play = document.createElement("button");
      play.type = "button";
      play.className = "play";
      play.textContent = "play";
      play.onclick = () => openClip(e.clip);
      td.appendChild(play);
    }
    body.insertBefore(row, body.firstChild);
    lastId = Math.max(lastId, e.id);
  }
  document.getElementById("no-events").hidden = body.children.length > 0;
}

function openClip(name) {
  const path = name.split("/").map(encodeURIComponent).join("/");
  document.getElementById("player").hidden = false;
  document.getElementById("player-spectrogram").src = "/spectrogram/" + path + ".png";
  const audio = document.getElementById("player-audio");
  audio.src = "/clips/" + path;
  audio.play().catch(() => {});
}

function chart(element, buckets, series, short) {
  const labels = Object.keys(series).sort((a, b) => sum(series[b]) - sum(series[a]));
  const top = labels.slice(0, COLORS.length - 1);
  const other = labels.slice(COLORS.length - 1);
  const stacks = top.map((l) => [l, series[l]]);
  if (other.length) stacks.push(["other", buckets.map((_, i) => other.reduce((s, l) => s + series[l][i], 0))]);
  const totals = buckets.map((_, i) => stacks.reduce((s, [, v]) => s + v[i], 0));
  const peak = Math.max(1, ...totals);
  const w = 100 / buckets.length;
  let svg = `<svg viewBox="0 0 100 60" preserveAspectRatio="none" role="img">`;
  buckets.forEach((bucket, i) => {
    let y = 55;
    stacks.forEach(([label, values], k) => {
      const h = (values[i] / peak) * 50;
      if (h > 0) svg += `<rect x="${i * w + 0.1}" y="${y - h}" width="${w - 0.2}" height="${h}" fill="${COLORS[k]}"><title>${short(bucket)} ${label}: ${values[i]}</title></rect>`;
      y -= h;
    });
  });
  svg += `<text x="0.5" y="4" font-size="3.5">${peak}</text><text x="0.5" y="59" font-size="3">${short(buckets[0])}</text>`;
  svg += `<text x="99.5" y="59" font-size="3" text-anchor="end">${short(buckets[buckets.length - 1])}</text></svg>`;
  const legend = stacks.map(([l], k) => `<span style="--c:${COLORS[k]}">${escapeHtml(l)}</span>`).join("");
  element.innerHTML = svg + `<div class="legend">${legend}</div>`;
}

const sum = (values) => values.reduce((a, b) => a + b, 0);
const escapeHtml = (s) => s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

function showHealth(h) {
  const rows = [];
  const live = h.live;
  const store = h.store;
  document.getElementById("station").textContent = (live || store).bundle_id ? `${(live || store).bundle_id} · ${(live || store).profile}` : "";
  if (live) {
    rows.push(["uptime", `${(live.uptime_s / 3600).toFixed(1)} h`], ["real-time factor", live.real_time_factor.toFixed(3)],
      ["windows", `${live.windows} (gated ${live.gated}, speech ${live.speech}, refused ${live.refused}, answered ${live.answered})`],
      ["input overflows", live.overflows], ["escalated / delivered", `${live.escalated} / ${live.delivered}`]);
    for (const [url, s] of Object.entries(live.streams)) rows.push([url, `${s.connections} connections, ${s.drops} drops, ${s.failed_attempts} failed attempts`]);
  } else {
    rows.push(["edge-run", "not attached (figures from the store)"], ["windows", `${store.windows} (gated ${store.gated})`]);
  }
  rows.push(["escalation queue", store.escalation_queue]);
  const mb = (b) => (b / 1e6).toFixed(1) + " MB";
  const limit = live && live.retention_mb ? ` of ${live.retention_mb} MB allowed` : "";
  rows.push(["clips", mb(h.disk.clips_bytes) + limit], ["disk free", `${mb(h.disk.free_bytes)} of ${mb(h.disk.total_bytes)}`]);
  for (const [zone, t] of Object.entries(h.temperatures)) rows.push([zone, t.toFixed(1) + " °C"]);
  document.getElementById("health").innerHTML = rows.map(([k, v]) => `<dt>${escapeHtml(String(k))}</dt><dd>${escapeHtml(String(v))}</dd>`).join("");
  document.getElementById("live-section").hidden = !h.attached;
  if (h.attached) document.getElementById("live").src = "/api/live.png?t=" + Date.now();
}

async function refresh() {
  try {
    addEvents(await get(`/api/events?after=${lastId}&limit=200`));
    const counts = await get("/api/counts");
    chart(document.getElementById("hourly"), counts.hours, counts.hourly, (b) => b.slice(11, 13) + "h");
    chart(document.getElementById("daily"), counts.days, counts.daily, (b) => b.slice(5));
    showHealth(await get("/api/health"));
  } catch (err) {
    document.getElementById("station").textContent = "station unreachable: " + err.message;
  }
}

document.getElementById("player-close").onclick = () => {
  document.getElementById("player-audio").pause();
  document.getElementById("player").hidden = true;
};
refresh();
setInterval(refresh, 3000);
