// whd dashboard: plain JavaScript over the JSON API under /v1/ (proto3 JSON: camelCase fields,
// enums by name, default values left out). Every value from the server reaches the page through
// textContent, never as HTML.
"use strict";

const TOKEN_KEY = "whd.apiToken";
const FEED_LIMIT = 200;
const ATTEMPTS_PAGE = 50;

const state = {
  subscriptions: [],
  // The subscription whose form is open for editing, or null when the form creates.
  editing: null,
  // What the details card shows: { kind: "subscription", id } or { kind: "delivery", id, from }.
  selected: null,
  feedFilter: "",
  // Cursor of the last event received, to resume the stream without gaps after a reopen.
  lastCursor: "",
  events: null,
  reconnectTimer: null,
  detailsTimer: null,
};

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------
// API access

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function apiToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function api(method, path, body) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  const token = apiToken();
  if (token) headers.authorization = "Bearer " + token;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (_) {
    throw new ApiError(0, "the server cannot be reached");
  }
  const text = await response.text();
  let payload = null;
  if (text) {
    try {
      payload = JSON.parse(text);
    } catch (_) {
      payload = null;
    }
  }
  const message = (payload && payload.error) || `the server answered HTTP ${response.status}`;
  if (response.status === 401) {
    askForToken(token ? message : "");
    throw new ApiError(401, message);
  }
  if (!response.ok) throw new ApiError(response.status, message);
  return payload || {};
}

const subscriptionPath = (id) => "/v1/subscriptions/" + encodeURIComponent(id);

// ---------------------------------------------------------------------------------------------
// Small DOM and formatting helpers

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && key !== "list") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function enumName(value, prefix) {
  return (value || "").replace(prefix, "");
}

function formatTime(timestamp) {
  if (!timestamp) return "";
  const date = new Date(timestamp);
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
  );
}

function formatClock(timestamp) {
  return timestamp ? formatTime(timestamp).slice(11) : "";
}

// Durations arrive as "0.012345s".
function formatDuration(duration) {
  if (!duration) return "";
  const seconds = parseFloat(duration);
  if (Number.isNaN(seconds)) return duration;
  if (seconds < 0.001) return "<1 ms";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  return `${seconds.toFixed(2)} s`;
}

// Delivery ids start with a timestamp, so their tail is what tells them apart.
function shortId(id) {
  return id && id.length > 16 ? id.slice(0, 4) + "…" + id.slice(-8) : id || "";
}

function outcomeBadge(outcome) {
  switch (outcome) {
    case "ATTEMPT_OUTCOME_SUCCESS":
      return el("span", { class: "badge ok", text: "success" });
    case "ATTEMPT_OUTCOME_FAILED_ATTEMPT":
      return el("span", { class: "badge bad", text: "failed, will retry" });
    case "ATTEMPT_OUTCOME_FAILURE":
      return el("span", { class: "badge bad", text: "failed" });
    default:
      return el("span", { class: "badge", text: enumName(outcome, "ATTEMPT_OUTCOME_") || "unknown" });
  }
}

function isFailure(outcome) {
  return outcome === "ATTEMPT_OUTCOME_FAILED_ATTEMPT" || outcome === "ATTEMPT_OUTCOME_FAILURE";
}

function statusBadge(status) {
  const name = enumName(status, "DELIVERY_STATUS_").toLowerCase() || "unknown";
  const tone = { delivered: "ok", pending: "warn", failed: "bad" }[name] || "";
  return el("span", { class: `badge ${tone}`.trim(), text: name });
}

function subscriptionById(id) {
  return state.subscriptions.find((subscription) => subscription.id === id);
}

function subscriptionLabel(id) {
  const subscription = subscriptionById(id);
  return subscription ? subscription.targetUrl : shortId(id);
}

// ---------------------------------------------------------------------------------------------
// API token

function askForToken(message) {
  $("token-panel").hidden = false;
  $("token-error").textContent = message || "";
  setLiveStatus("offline", "token needed");
  closeFeed();
  $("token-input").focus();
}

function onTokenSubmit(event) {
  event.preventDefault();
  const token = $("token-input").value.trim();
  if (!token) {
    $("token-error").textContent = "enter the server's API token";
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token-input").value = "";
  $("token-panel").hidden = true;
  $("forget-token").hidden = false;
  start();
}

function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  $("forget-token").hidden = true;
  closeFeed();
  start();
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

async function loadSubscriptions() {
  const all = [];
  let pageToken = "";
  do {
    const query = new URLSearchParams({ page_size: "200" });
    if (pageToken) query.set("page_token", pageToken);
    const page = await api("GET", "/v1/subscriptions?" + query);
    all.push(...(page.subscriptions || []));
    pageToken = page.nextPageToken || "";
  } while (pageToken && all.length < 2000);
  state.subscriptions = all;
  $("subscriptions-error").textContent = "";
  renderSubscriptions();
  renderFeedFilter();
}

function renderSubscriptions() {
  const items = state.subscriptions.map(subscriptionItem);
  $("subscription-list").replaceChildren(...items);
  $("subscriptions-empty").hidden = state.subscriptions.length > 0;
}

function subscriptionItem(subscription) {
  const selected =
    state.selected &&
    (state.selected.kind === "subscription" ? state.selected.id : state.selected.from) === subscription.id;
  const eventTypes = subscription.eventTypes || [];
  const notice = el("p", { class: "subscription-notice", "aria-live": "polite" });
  const deleteButton = el("button", {
    type: "button",
    class: "small ghost danger",
    text: "Delete",
    "data-action": "delete",
  });
  deleteButton.addEventListener("click", () => deleteSubscription(subscription, deleteButton, notice));
  return el(
    "li",
    { class: selected ? "subscription selected" : "subscription", "data-subscription-id": subscription.id },
    el(
      "div",
      { class: "subscription-main" },
      el("button", {
        type: "button",
        class: "subscription-url",
        text: subscription.targetUrl,
        title: "Show recent attempts",
        onclick: () => showAttempts(subscription.id, true),
      }),
      el(
        "div",
        { class: "subscription-meta" },
        el("code", { text: subscription.id }),
        eventTypes.length
          ? eventTypes.map((type) => el("span", { class: "chip", text: type }))
          : el("span", { class: "chip", text: "all event types" }),
        subscription.hasSecret ? el("span", { class: "badge info", text: "signed" }) : null,
      ),
      subscription.description
        ? el("p", { class: "subscription-description", text: subscription.description })
        : null,
      notice,
    ),
    el(
      "div",
      { class: "subscription-actions" },
      el("button", {
        type: "button",
        class: "small",
        text: "Attempts",
        "data-action": "attempts",
        onclick: () => showAttempts(subscription.id, true),
      }),
      el("button", {
        type: "button",
        class: "small",
        text: "Send test",
        "data-action": "test",
        onclick: (event) => sendTestWebhook(subscription, event.currentTarget, notice),
      }),
      el("button", {
        type: "button",
        class: "small",
        text: "Edit",
        "data-action": "edit",
        onclick: () => editSubscription(subscription),
      }),
      deleteButton,
    ),
  );
}

async function sendTestWebhook(subscription, button, notice) {
  button.disabled = true;
  notice.className = "subscription-notice";
  notice.textContent = "sending a test webhook…";
  try {
    const receipt = await api("POST", subscriptionPath(subscription.id) + "/test", {});
    if (receipt.delivery_id) {
      notice.className = "subscription-notice ok";
      notice.textContent = `test webhook queued as ${receipt.delivery_id}`;
    } else {
      notice.className = "subscription-notice bad";
      notice.textContent = "not sent: this subscription does not receive the event type whd.test";
    }
  } catch (error) {
    notice.className = "subscription-notice bad";
    notice.textContent = error.message;
  } finally {
    button.disabled = false;
  }
}

// Deleting takes two clicks: the first arms the button for a few seconds.
async function deleteSubscription(subscription, button, notice) {
  if (!button.classList.contains("confirming")) {
    button.classList.add("confirming");
    button.textContent = "Confirm delete";
    setTimeout(() => {
      button.classList.remove("confirming");
      button.textContent = "Delete";
    }, 4000);
    return;
  }
  button.disabled = true;
  try {
    await api("DELETE", subscriptionPath(subscription.id));
    if (state.editing && state.editing.id === subscription.id) resetForm();
    if (
      state.selected &&
      (state.selected.id === subscription.id || state.selected.from === subscription.id)
    ) {
      clearDetails();
    }
    await loadSubscriptions();
  } catch (error) {
    notice.className = "subscription-notice bad";
    notice.textContent = error.message;
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Create and edit form

function editSubscription(subscription) {
  state.editing = subscription;
  clearFormErrors();
  $("editor-title").textContent = "Edit subscription";
  $("form-submit").textContent = "Save changes";
  $("form-cancel").hidden = false;
  $("generate-secret-row").hidden = true;
  $("secret-once").hidden = true;
  $("field-url").value = subscription.targetUrl || "";
  $("field-event-types").value = (subscription.eventTypes || []).join(", ");
  $("field-description").value = subscription.description || "";
  $("field-url").focus();
}

function resetForm() {
  state.editing = null;
  clearFormErrors();
  $("subscription-form").reset();
  $("editor-title").textContent = "New subscription";
  $("form-submit").textContent = "Create subscription";
  $("form-cancel").hidden = true;
  $("generate-secret-row").hidden = false;
}

function clearFormErrors() {
  $("form-error").textContent = "";
  for (const slot of document.querySelectorAll(".field-error")) slot.textContent = "";
  for (const input of document.querySelectorAll("#subscription-form input")) {
    input.removeAttribute("aria-invalid");
  }
}

// Shows the API's message next to the field it names ("subscription.target_url: …"), or under the
// form when it names none.
function showFormError(message) {
  for (const slot of document.querySelectorAll(".field-error")) {
    if (message.startsWith(slot.dataset.field + ":")) {
      slot.textContent = message;
      const input = slot.previousElementSibling;
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
  }
  $("form-error").textContent = message;
}

async function onFormSubmit(event) {
  event.preventDefault();
  clearFormErrors();
  const subscription = {
    target_url: $("field-url").value.trim(),
    event_types: $("field-event-types")
      .value.split(",")
      .map((type) => type.trim())
      .filter(Boolean),
    description: $("field-description").value.trim(),
  };
  const submit = $("form-submit");
  submit.disabled = true;
  try {
    if (state.editing) {
      await api("PATCH", subscriptionPath(state.editing.id), {
        subscription,
        update_mask: { paths: ["target_url", "event_types", "description"] },
      });
      resetForm();
    } else {
      const created = await api("POST", "/v1/subscriptions", {
        subscription,
        generate_secret: $("field-generate-secret").checked,
      });
      resetForm();
      if (created.secret) {
        $("secret-value").textContent = created.secret;
        $("secret-once").hidden = false;
      }
    }
    await loadSubscriptions();
  } catch (error) {
    if (error.status !== 401) showFormError(error.message);
  } finally {
    submit.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Details: a subscription's attempts, a delivery's history

function clearDetails() {
  state.selected = null;
  $("details-title").textContent = "Attempts";
  $("details-back").hidden = true;
  $("details-body").replaceChildren(
    el("p", { class: "empty", text: "Select a subscription to see its recent delivery attempts." }),
  );
  renderSubscriptions();
}

function revealDetails(scroll) {
  if (scroll && window.matchMedia("(max-width: 760px)").matches) {
    document.querySelector(".area-details").scrollIntoView({ behavior: "smooth", block: "start" });
  }
}

async function showAttempts(subscriptionId, scroll) {
  state.selected = { kind: "subscription", id: subscriptionId };
  renderSubscriptions();
  $("details-back").hidden = true;
  $("details-title").textContent = "Recent attempts";
  revealDetails(scroll);
  try {
    const page = await api(
      "GET",
      `${subscriptionPath(subscriptionId)}/attempts?page_size=${ATTEMPTS_PAGE}`,
    );
    if (!isSelected("subscription", subscriptionId)) return;
    renderAttempts(subscriptionId, page.attempts || [], page.nextPageToken || "");
  } catch (error) {
    if (isSelected("subscription", subscriptionId)) showDetailsError(error);
  }
}

function isSelected(kind, id) {
  return state.selected && state.selected.kind === kind && state.selected.id === id;
}

function showDetailsError(error) {
  $("details-body").replaceChildren(el("p", { class: "form-error", role: "alert", text: error.message }));
}

function renderAttempts(subscriptionId, attempts, nextPageToken) {
  const caption = el(
    "p",
    { class: "details-caption" },
    "Subscription ",
    el("code", { text: subscriptionId }),
    " → ",
    el("code", { text: subscriptionLabel(subscriptionId) }),
  );
  if (!attempts.length) {
    $("details-body").replaceChildren(
      caption,
      el("p", { class: "empty", text: "No attempts yet. Send a test webhook to make one." }),
    );
    return;
  }
  const body = el("tbody", {}, attempts.map(attemptRow));
  const more = nextPageToken
    ? el("button", {
        type: "button",
        class: "small more",
        text: "Older attempts",
        onclick: async (event) => {
          event.currentTarget.disabled = true;
          try {
            const page = await api(
              "GET",
              `${subscriptionPath(subscriptionId)}/attempts?page_size=${ATTEMPTS_PAGE}&page_token=${encodeURIComponent(nextPageToken)}`,
            );
            renderAttempts(subscriptionId, attempts.concat(page.attempts || []), page.nextPageToken || "");
          } catch (error) {
            showDetailsError(error);
          }
        },
      })
    : null;
  $("details-body").replaceChildren(
    caption,
    el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { class: "attempts-table" },
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            ["Time", "Delivery", "Attempt", "Outcome", "HTTP", "Duration", "Error"].map((title) =>
              el("th", { text: title }),
            ),
          ),
        ),
        body,
      ),
    ),
    ...(more ? [more] : []),
  );
}

function attemptRow(attempt) {
  return el(
    "tr",
    { class: isFailure(attempt.outcome) ? "failed" : "" },
    el("td", { class: "nowrap", text: formatTime(attempt.attemptTime) }),
    el(
      "td",
      { class: "nowrap" },
      el("button", {
        type: "button",
        class: "link",
        text: shortId(attempt.deliveryId),
        title: attempt.deliveryId,
        "data-delivery-id": attempt.deliveryId,
        onclick: () => showDelivery(attempt.deliveryId, attempt.subscriptionId, true),
      }),
    ),
    el("td", { text: `#${attempt.attemptNumber || 0}` }),
    el("td", {}, outcomeBadge(attempt.outcome)),
    el("td", { text: attempt.httpStatus ? String(attempt.httpStatus) : "—" }),
    el("td", { class: "nowrap", text: formatDuration(attempt.duration) }),
    el("td", { class: "error-text", text: attempt.error || "" }),
  );
}

async function showDelivery(deliveryId, fromSubscription, scroll) {
  state.selected = { kind: "delivery", id: deliveryId, from: fromSubscription || "" };
  renderSubscriptions();
  $("details-title").textContent = "Delivery";
  $("details-back").hidden = !fromSubscription;
  revealDetails(scroll);
  try {
    const delivery = await api("GET", "/v1/deliveries/" + encodeURIComponent(deliveryId));
    if (!isSelected("delivery", deliveryId)) return;
    if (!state.selected.from) {
      state.selected.from = delivery.subscriptionId;
      $("details-back").hidden = false;
      renderSubscriptions();
    }
    renderDelivery(delivery);
  } catch (error) {
    if (isSelected("delivery", deliveryId)) showDetailsError(error);
  }
}

function renderDelivery(delivery) {
  const field = (label, value) => [el("dt", { text: label }), el("dd", {}, value)];
  const summary = el(
    "dl",
    { class: "details-summary" },
    field("Status", statusBadge(delivery.status)),
    field("Delivery", el("code", { text: delivery.id })),
    field("Subscription", el("code", { text: subscriptionLabel(delivery.subscriptionId) })),
    field("Event type", delivery.eventType || "—"),
    field("Created", formatTime(delivery.createTime)),
    field("Attempts", String(delivery.attemptCount || 0)),
    delivery.nextAttemptTime ? field("Next attempt", formatTime(delivery.nextAttemptTime)) : null,
  );
  const attempts = delivery.attempts || [];
  const history = attempts.length
    ? el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          { class: "history-table" },
          el(
            "thead",
            {},
            el(
              "tr",
              {},
              ["Attempt", "Time", "Outcome", "HTTP", "Duration", "Error"].map((title) =>
                el("th", { text: title }),
              ),
            ),
          ),
          el(
            "tbody",
            {},
            attempts.map((attempt) =>
              el(
                "tr",
                { class: isFailure(attempt.outcome) ? "failed" : "" },
                el("td", { text: `#${attempt.attemptNumber || 0}` }),
                el("td", { class: "nowrap", text: formatTime(attempt.attemptTime) }),
                el("td", {}, outcomeBadge(attempt.outcome)),
                el("td", { text: attempt.httpStatus ? String(attempt.httpStatus) : "—" }),
                el("td", { class: "nowrap", text: formatDuration(attempt.duration) }),
                el("td", { class: "error-text", text: attempt.error || "" }),
              ),
            ),
          ),
        ),
      )
    : el("p", { class: "empty", text: "No attempt yet: the delivery is queued." });
  $("details-body").replaceChildren(summary, history);
}

// A live event about what the details card shows refreshes it, a moment later so that a burst of
// events costs one request.
function refreshDetailsFor(event) {
  const selected = state.selected;
  if (!selected) return;
  const relevant =
    (selected.kind === "subscription" && selected.id === event.subscriptionId) ||
    (selected.kind === "delivery" && selected.id === event.deliveryId);
  if (!relevant) return;
  clearTimeout(state.detailsTimer);
  state.detailsTimer = setTimeout(() => {
    if (state.selected !== selected) return;
    if (selected.kind === "subscription") showAttempts(selected.id, false);
    else showDelivery(selected.id, selected.from, false);
  }, 300);
}

// ---------------------------------------------------------------------------------------------
// Live feed (Server-Sent Events)

function setLiveStatus(state, text) {
  const badge = $("live-status");
  badge.dataset.state = state;
  badge.textContent = text;
}

function renderFeedFilter() {
  const select = $("feed-filter");
  const options = [el("option", { value: "", text: "All subscriptions" })].concat(
    state.subscriptions.map((subscription) =>
      el("option", { value: subscription.id, text: subscription.targetUrl }),
    ),
  );
  select.replaceChildren(...options);
  if (state.feedFilter && !subscriptionById(state.feedFilter)) state.feedFilter = "";
  select.value = state.feedFilter;
}

function closeFeed() {
  clearTimeout(state.reconnectTimer);
  if (state.events) {
    state.events.close();
    state.events = null;
  }
}

function openFeed() {
  closeFeed();
  const query = new URLSearchParams();
  if (state.feedFilter) query.set("subscription_id", state.feedFilter);
  if (state.lastCursor) query.set("after_cursor", state.lastCursor);
  const token = apiToken();
  if (token) query.set("access_token", token);
  const events = new EventSource("/v1/events?" + query);
  state.events = events;
  setLiveStatus("connecting", "connecting");
  events.onopen = () => setLiveStatus("live", "live");
  events.onmessage = (message) => {
    if (message.lastEventId) state.lastCursor = message.lastEventId;
    let event;
    try {
      event = JSON.parse(message.data);
    } catch (_) {
      return;
    }
    addFeedEvent(event);
    refreshDetailsFor(event);
  };
  events.addEventListener("error", (message) => {
    // An "error" event with data is the server's; one without is the connection's.
    if (message.data) {
      try {
        setLiveStatus("offline", JSON.parse(message.data).error);
      } catch (_) {
        setLiveStatus("offline", "stream error");
      }
    }
    if (events.readyState === EventSource.CLOSED) {
      // The browser gave up (the server refused the stream, or it ended): ask the API why, which
      // shows the token form on a 401, and try again a little later.
      if (!message.data) setLiveStatus("offline", "offline");
      state.events = null;
      clearTimeout(state.reconnectTimer);
      state.reconnectTimer = setTimeout(() => {
        api("GET", "/v1/subscriptions?page_size=1").then(openFeed, () => {
          if (!$("token-panel").hidden) return;
          state.reconnectTimer = setTimeout(openFeed, 5000);
        });
      }, 2000);
    } else {
      setLiveStatus("connecting", "reconnecting");
    }
  });
}

function onFeedFilterChange() {
  state.feedFilter = $("feed-filter").value;
  // A new filter starts a new stream from now; what the old one showed does not apply.
  state.lastCursor = "";
  $("feed").replaceChildren();
  $("feed-empty").hidden = false;
  openFeed();
}

function addFeedEvent(event) {
  const feed = $("feed");
  feed.prepend(feedRow(event));
  while (feed.children.length > FEED_LIMIT) feed.lastElementChild.remove();
  $("feed-empty").hidden = true;
}

function feedRow(event) {
  if (event.kind === "DELIVERY_EVENT_KIND_LAGGED") {
    return el(
      "li",
      { class: "feed-row notice" },
      el("span", { class: "badge warn", text: "catching up" }),
      el("div", { class: "feed-main" }, `this page fell behind by ${event.laggedCount || 0} events; they follow`),
      el("span", { class: "feed-time" }),
    );
  }
  const attempt = event.attempt;
  let badge;
  let tone;
  let detail = "";
  if (event.kind === "DELIVERY_EVENT_KIND_QUEUED") {
    badge = el("span", { class: "badge info", text: "queued" });
    tone = "queued";
  } else if (attempt) {
    badge = outcomeBadge(attempt.outcome);
    tone = isFailure(attempt.outcome) ? "failed" : "ok";
    const parts = [`attempt #${attempt.attemptNumber || 0}`];
    // An error that already starts with the status ("HTTP 500: …") says it once.
    const error = attempt.error || "";
    if (attempt.httpStatus && !error.startsWith(`HTTP ${attempt.httpStatus}`)) {
      parts.push(`HTTP ${attempt.httpStatus}`);
    }
    if (attempt.duration) parts.push(formatDuration(attempt.duration));
    if (error) parts.push(error);
    if (event.nextAttemptTime) parts.push(`next at ${formatClock(event.nextAttemptTime)}`);
    detail = parts.join(" · ");
  } else {
    badge = statusBadge(event.status);
    tone = event.status === "DELIVERY_STATUS_FAILED" ? "failed" : "";
    detail = "cancelled with its subscription";
  }
  return el(
    "li",
    {
      class: `feed-row ${tone}`,
      "data-delivery-id": event.deliveryId,
      "data-kind": enumName(event.kind, "DELIVERY_EVENT_KIND_").toLowerCase(),
      "data-outcome": attempt ? enumName(attempt.outcome, "ATTEMPT_OUTCOME_").toLowerCase() : "",
    },
    badge,
    el(
      "div",
      { class: "feed-main" },
      el(
        "div",
        { class: "feed-title", title: subscriptionLabel(event.subscriptionId) },
        `${event.eventType || "(no event type)"} → ${subscriptionLabel(event.subscriptionId)}`,
      ),
      el(
        "div",
        { class: tone === "failed" ? "feed-detail bad" : "feed-detail" },
        el("button", {
          type: "button",
          class: "link",
          text: shortId(event.deliveryId),
          title: event.deliveryId,
          onclick: () => showDelivery(event.deliveryId, event.subscriptionId, true),
        }),
        detail ? " · " + detail : "",
      ),
    ),
    el("span", { class: "feed-time", text: formatClock(event.eventTime) }),
  );
}

// ---------------------------------------------------------------------------------------------
// Start

async function start() {
  $("forget-token").hidden = !apiToken();
  try {
    await loadSubscriptions();
  } catch (error) {
    if (error.status !== 401) $("subscriptions-error").textContent = error.message;
    if (error.status === 401) return;
  }
  openFeed();
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", onTokenSubmit);
  $("forget-token").addEventListener("click", forgetToken);
  $("subscription-form").addEventListener("submit", onFormSubmit);
  $("form-cancel").addEventListener("click", resetForm);
  $("secret-dismiss").addEventListener("click", () => {
    $("secret-once").hidden = true;
    $("secret-value").textContent = "";
  });
  $("refresh-subscriptions").addEventListener("click", () =>
    loadSubscriptions().catch((error) => {
      if (error.status !== 401) $("subscriptions-error").textContent = error.message;
    }),
  );
  $("details-back").addEventListener("click", () => {
    if (state.selected && state.selected.from) showAttempts(state.selected.from, false);
  });
  $("feed-filter").addEventListener("change", onFeedFilterChange);
  start();
});
