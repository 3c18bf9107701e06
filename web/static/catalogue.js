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
  const token = form.querySelector("#rollout-token");
  const action = form.querySelector("#rollout-action");
  const version = form.querySelector("#rollout-version");
  const channel = form.querySelector("#rollout-channel");
  const percent = form.querySelector("#rollout-percent");
  const answer = form.querySelector("#rollout-answer");
  const button = form.querySelector("button[type=submit]");
  const sync = () => {
    // Halt takes no percentage; resume takes an optional one; set needs one.
    percent.disabled = action.value === "halt";
    percent.required = action.value === "set";
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
    if (action.value === "set") {
      body = { percent: Number(percent.value) };
    } else {
      url = `${base}/${action.value}${query}`;
      method = "POST";
      if (action.value === "resume" && percent.value !== "") {
        body = { percent: Number(percent.value) };
      }
    }
    const headers = { Authorization: `Bearer ${token.value.trim()}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    answer.classList.remove("failed");
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
        `${result.stage}; ${result.percent}% of hosts.`;
    } catch (err) {
      answer.classList.add("failed");
      answer.textContent = `The registry did not answer: ${err.message || err}`;
    } finally {
      button.disabled = false;
    }
  });
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
