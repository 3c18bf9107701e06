// Progressive enhancement only: every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Copy buttons: copy the exact text of their target (a snippet, a hash).
  for (const button of document.querySelectorAll("button.copy[data-copy]")) {
    const target = document.getElementById(button.dataset.copy);
    if (!target || !navigator.clipboard) continue;
    const label = button.textContent;
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(target.textContent);
        button.textContent = "Copied";
      } catch (err) {
        button.textContent = "Copy failed";
      }
      setTimeout(() => { button.textContent = label; }, 1500);
    });
  }
  // Instruction choices: show the new instructions as soon as a choice changes.
  for (const form of document.querySelectorAll("form.choices")) {
    for (const select of form.querySelectorAll("select")) {
      select.addEventListener("change", () => form.submit());
    }
  }
  for (const form of document.querySelectorAll("form.rollout-admin[data-extension]")) {
    rolloutAdmin(form);
  }
});

// The one-line reason of an API error: the registry's `detail` string, or the first
// problem of a request the API's validation refused (422: a list of {loc, msg}).
function errorDetail(answer) {
  const detail = answer && answer.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.length) {
    const first = detail[0];
    const where = Array.isArray(first.loc) ? first.loc.slice(1).join(".") : "";
    return where ? `${where}: ${first.msg}` : String(first.msg);
  }
  return "no detail given";
}

// Rollout changes by an admin, through the same authenticated, audited API as
// `sysext rollout set|halt|resume`. The token lives only in the password field (this
// page's memory): never in localStorage, sessionStorage or a cookie. Because the request
// carries it in an Authorization header that only this script can set, and the registry
// uses no cookies at all, another site cannot forge such a request (no CSRF): a
// cross-site form or fetch can neither add the header nor read the token.
function rolloutAdmin(form) {
  const name = form.dataset.extension;
  const field = (id) => form.querySelector(`#rollout-${id}`);
  const token = field("token");
  const action = field("action");
  const version = field("version");
  const channel = field("channel");
  const percent = field("percent");
  const more = field("more");
  const answer = field("answer");
  const button = form.querySelector("button[type=submit]");
  const sync = () => {
    // Halt takes no percentage; resume takes an optional one. Group, canary, schedule
    // and window are part of `set` only (as on the CLI).
    percent.disabled = action.value === "halt";
    more.hidden = action.value !== "set";
  };
  action.addEventListener("change", sync);
  sync();
  // Not even the back-forward cache keeps the token once the admin leaves the page.
  window.addEventListener("pagehide", () => { token.value = ""; });
  form.hidden = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const base = `/api/v1/extensions/${encodeURIComponent(name)}/rollouts/` +
      encodeURIComponent(version.value.trim());
    const query = `?channel=${encodeURIComponent(channel.value)}`;
    let url = base + query;
    let method = "PUT";
    let body;
    answer.classList.remove("failed");
    if (action.value === "set") {
      try {
        body = rolloutBody(form);
      } catch (err) {
        answer.classList.add("failed");
        answer.textContent = `Not sent: ${err.message}`;
        return;
      }
    } else {
      url = `${base}/${action.value}${query}`;
      method = "POST";
      if (action.value === "resume" && percent.value !== "") {
        body = { percent: Number(percent.value) };
      }
    }
    const headers = { Authorization: `Bearer ${token.value.trim()}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    answer.textContent = "Sending…";
    button.disabled = true;
    try {
      const response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",  // nothing ambient: the header is the only credential
        cache: "no-store",
      });
      const result = await response.json().catch(() => null);
      if (!response.ok) {
        answer.classList.add("failed");
        answer.textContent = `Refused (${response.status}): ${errorDetail(result)}`;
        return;
      }
      // The table first, then the answer: when it is announced, the page agrees with it.
      await refreshRollouts().catch(() => undefined);
      answer.textContent = `Done: ${result.version} (${result.channel}) is now ` +
        `${result.stage}; ${result.percent}% of hosts${rolloutExtras(result)}.`;
    } catch (err) {
      answer.classList.add("failed");
      answer.textContent = `The registry did not answer: ${err.message || err}`;
    } finally {
      button.disabled = false;
    }
  });
}

// The body of PUT …/rollouts/VERSION, field for field what `sysext rollout set` sends
// (sysext/cli/rollout_cmds.py): an empty field is not given. Numbers that are not plain
// digits go to the API as they were typed, so that its validation refuses them in its own
// words; only durations are converted here (the API takes seconds), with the CLI's grammar.
function rolloutBody(form) {
  const text = (id) => form.querySelector(`#rollout-${id}`).value.trim();
  const number = (value) => (/^\d+$/.test(value) ? Number(value) : value);
  const percent = form.querySelector("#rollout-percent").value;
  const steps = text("steps");
  const body = {
    percent: percent === "" ? null : Number(percent),
    group: text("group") || null,
    canary: text("canary") === "" ? null : number(text("canary")),
    steps: steps === "" ? [] : steps.split(",").map((part) => number(part.trim())),
    every_seconds: durationSeconds(text("every"), "every"),
    window_seconds: durationSeconds(text("window"), "window"),
    // Ticked: `--canary-activated`; unticked: unchanged (as the CLI without the option).
    canary_activated: form.querySelector("#rollout-canary-activated").checked ? true : null,
  };
  if (body.percent === null && !body.steps.length && body.canary === null &&
      body.window_seconds === null && body.canary_activated === null) {
    throw new Error("nothing to set (give a percentage, steps and an interval, a canary " +
      "or a window)");
  }
  return body;
}

// sysext.core.durations.parse_duration in JavaScript: 90s, 30m, 12h, 7d, 2w, combined as
// 1d12h; null for an empty field. tests/test_rollout_policy.py checks both agree.
const DURATION_UNITS = { s: 1, m: 60, h: 3600, d: 86400, w: 7 * 86400 };
function durationSeconds(text, what) {
  if (text === "") return null;
  const cleaned = text.trim().toLowerCase().replaceAll(" ", "");
  const parts = [...cleaned.matchAll(/(\d+)([smhdw])/g)];
  if (!cleaned || parts.map((m) => m[0]).join("") !== cleaned) {
    throw new Error(`invalid ${what} '${text}': write a number and a unit: 90s, 30m, 12h, ` +
      "7d or 2w (units may be combined: 1d12h)");
  }
  const seconds = parts.reduce((sum, m) => sum + Number(m[1]) * DURATION_UNITS[m[2]], 0);
  if (seconds <= 0) throw new Error(`invalid ${what} '${text}': it must be longer than zero`);
  return seconds;
}

// What `sysext rollout set` prints after the stage: groups, schedule, canary, window.
function rolloutExtras(info) {
  let extra = "";
  const groups = Object.keys(info.groups || {}).sort()
    .map((g) => `${g} ${info.groups[g]}%`).join(", ");
  if (groups) extra += `; groups: ${groups}`;
  if (info.steps && info.steps.length) {
    extra += `; schedule ${info.steps.join(",")} every ${info.every_seconds}s`;
    if (info.next_step_at) extra += `, next at ${info.next_step_at}`;
  }
  const activated = Boolean(info.canary_activated);
  if (info.canary) {
    const gate = activated ? "; gate: fetched and reported activated" : "";
    extra += `; canary ${info.canary} (${info.canary_done ? "passed" : "waiting"}${gate})`;
    if (activated && !info.canary_done && info.canary_fetched !== null &&
        info.canary_fetched !== undefined) {
      extra += `; canary hosts so far: ${info.canary_fetched} fetched, ` +
        `${info.canary_reported_activated} of them reported activated`;
    }
  }
  if (info.failure_reports) {
    extra += `; ${info.failure_reports} host(s) reported a failure (not acted on)`;
  }
  if (info.window_seconds) {
    const what = activated ? "a fetch and an activation report" : "a fetch";
    extra += `; auto-pause after ${info.window_seconds}s without ${what}`;
  }
  return extra;
}

// The rollout table and chart as the server renders them now (one page, no second
// renderer in JavaScript).
async function refreshRollouts() {
  const current = document.getElementById("rollout-state");
  if (!current) return;
  const response = await fetch(window.location.href, { credentials: "omit", cache: "no-store" });
  if (!response.ok) return;
  const fresh = new DOMParser()
    .parseFromString(await response.text(), "text/html")
    .getElementById("rollout-state");
  if (fresh) current.replaceWith(document.importNode(fresh, true));
}
