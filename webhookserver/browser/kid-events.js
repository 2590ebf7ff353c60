// kid-events.js: k-ID's widget (DOM) events for the page that embeds the
// widget, served by kid-operator's receiver at /sdk/kid-events.js.
//
//   import { listen, watchStatus } from 'https://<receiver>/sdk/kid-events.js';
//   const stop = listen({ iframe: document.querySelector('#kid-widget') });
//   window.addEventListener('kid:Widget.AgeGate.Result', (e) => console.log(e.detail));
//
// A plain ES module: no build step and no dependencies. It never throws at a
// message, a relay or a status stream: the page keeps working whatever the
// widget, the network or the receiver do.
//
// DOM events are hints. They come from the player's browser, which the player
// controls; access decisions come from k-ID's webhooks and REST API (the
// operator's KidUser status, which watchStatus follows), never from these
// events (k-ID events spec §5.9).

/** The DOM event types of k-ID (events spec §3.3). */
export const EVENT_TYPES = Object.freeze([
  'Verification.Error',
  'Verification.Result',
  'Widget.AgeGate.Challenge',
  'Widget.AgeGate.Result',
  'Widget.DataNotices.ConsentApproved',
  'Widget.ExitReview',
]);

/**
 * The origins k-ID's widgets are served from (live and test). A message is
 * accepted from these, and from the origins passed to listen, only.
 */
export const KID_ORIGINS = Object.freeze(['https://family.k-id.com', 'https://family.test.k-id.com']);

// The types whose fields sit in a `data` object. Verification.Error is flat
// (eventType, method and status at the top level); Widget.ExitReview has no
// documented payload, so it is accepted with or without one.
const ENVELOPED = new Set([
  'Verification.Result',
  'Widget.AgeGate.Challenge',
  'Widget.AgeGate.Result',
  'Widget.DataNotices.ConsentApproved',
]);

const KNOWN = new Set(EVENT_TYPES);

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * parseMessage returns the message if it is one of k-ID's DOM events, else
 * null. A message is an object whose eventType is one of EVENT_TYPES; the
 * enveloped types must carry an object `data` (so that a listener can read
 * `detail.data.challengeId` without a check). Strings, arrays, unknown types
 * and other shapes are not k-ID events.
 */
export function parseMessage(data) {
  if (!isObject(data) || typeof data.eventType !== 'string' || !KNOWN.has(data.eventType)) {
    return null;
  }
  if (ENVELOPED.has(data.eventType) && !isObject(data.data)) {
    return null;
  }
  if ('data' in data && data.data !== undefined && !isObject(data.data)) {
    return null;
  }
  return data;
}

/**
 * isAllowedOrigin reports whether a message origin is one of KID_ORIGINS or
 * of extra, compared exactly: scheme, host and port.
 *
 * k-ID's documented check, `event.origin.endsWith('.k-id.com')`, is looser:
 * it accepts any scheme (`http://family.k-id.com`, which anyone on the
 * network path can impersonate), any host at any depth under k-id.com
 * (`https://anything.k-id.com`, `https://a.b.k-id.com`), and, checking no
 * event.source, any window of those origins (another frame or a popup), not
 * only the widget. It does reject `https://evil-k-id.com`,
 * `https://family.k-id.com.evil.example`, ports (`https://family.k-id.com:8443`)
 * and the apex `https://k-id.com`; so does this check.
 */
export function isAllowedOrigin(origin, extra = []) {
  return typeof origin === 'string' && (KID_ORIGINS.includes(origin) || extra.includes(origin));
}

function dispatch(target, type, detail) {
  try {
    target.dispatchEvent(new CustomEvent(type, { detail }));
  } catch (_) {
    // A listener that throws reports its own error; the module goes on.
  }
}

function relayMessage(relay, message, target) {
  let request;
  try {
    request = fetch(relay.url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + relay.token },
      body: JSON.stringify(message),
      mode: 'cors',
    });
  } catch (err) {
    request = Promise.reject(err);
  }
  request.then(
    (resp) => {
      dispatch(target, 'kid:relay', {
        eventType: message.eventType,
        status: resp.status,
        ok: resp.ok,
        retryAfter: resp.headers.get('Retry-After'),
      });
    },
    (err) => {
      // A network error, or a CORS refusal (the page's origin is not in the
      // product's spec.browser.allowedOrigins): the status is 0.
      dispatch(target, 'kid:relay', { eventType: message.eventType, status: 0, ok: false, error: String(err) });
    },
  );
}

/**
 * listen accepts k-ID's DOM events from one widget iframe and dispatches each
 * as a CustomEvent named 'kid:' + eventType (for example
 * 'kid:Widget.AgeGate.Result') on target, with the message as its detail.
 *
 * A message is accepted only when it comes from iframe's window
 * (event.source === iframe.contentWindow) AND from an allowed origin: by
 * default exactly https://family.k-id.com and https://family.test.k-id.com;
 * `origins` adds more, matched exactly, scheme included. Anything else, and
 * any message that is not a k-ID event (parseMessage), is ignored.
 *
 * With relay {url, token} (url: https://<receiver>/browser/<namespace>/<product>,
 * token: a relay token the game's backend minted for this player), each
 * accepted message is also POSTed to the receiver, which stores it as a hint
 * and asks k-ID; the answer's status is dispatched as 'kid:relay'
 * ({eventType, status, ok, retryAfter}; status 0 when the request failed).
 * Relay errors never reach the page.
 *
 * Returns stop(), which removes the listener (relays in flight complete).
 */
export function listen({ iframe, origins = [], target = window, relay } = {}) {
  if (!iframe) {
    throw new TypeError('listen: iframe is required');
  }
  const extra = typeof origins === 'string' ? [origins] : Array.from(origins, String);
  const onMessage = (event) => {
    try {
      if (event.source === null || event.source !== iframe.contentWindow) {
        return;
      }
      if (!isAllowedOrigin(event.origin, extra)) {
        return;
      }
      const message = parseMessage(event.data);
      if (message === null) {
        return;
      }
      dispatch(target, 'kid:' + message.eventType, message);
      if (relay && relay.url && relay.token) {
        relayMessage(relay, message, target);
      }
    } catch (_) {
      // Never break the page over a message.
    }
  };
  window.addEventListener('message', onMessage);
  return function stop() {
    window.removeEventListener('message', onMessage);
  };
}

// The status stream's reconnect delays: the first retry after a dropped
// connection, the longest wait between two, and the longest Retry-After
// honoured. A page whose stream the receiver refused for now (429, 503)
// tries again after Retry-After.
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30000;
const RETRY_AFTER_MAX_S = 60;

/**
 * parseEvents splits Server-Sent Events text into complete events
 * ({event, data}) and the incomplete rest. Comments (the heartbeat) and
 * fields other than event and data are skipped.
 */
export function parseEvents(text) {
  const events = [];
  const blocks = text.split(/\r\n\r\n|\n\n|\r\r/);
  const rest = blocks.pop();
  for (const block of blocks) {
    let event = 'message';
    const data = [];
    for (const line of block.split(/\r\n|\n|\r/)) {
      if (line === '' || line.startsWith(':')) {
        continue;
      }
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) {
        value = value.slice(1);
      }
      if (field === 'event') {
        event = value;
      } else if (field === 'data') {
        data.push(value);
      }
    }
    if (data.length > 0) {
      events.push({ event, data: data.join('\n') });
    }
  }
  return { events, rest };
}

/**
 * watchStatus follows the operator's view of one player (the subject of the
 * token): it reads the receiver's status stream,
 * url = https://<receiver>/browser/<namespace>/<product>/status, with
 * fetch and the token in an Authorization header (never in the URL, which
 * proxies and ingress controllers log), and for every `event: status`
 * message (data: {"subject":{"kind","id"},"user","consent","verification",
 * "session","final"}) calls onStatus(status) and dispatches 'kid:status' on
 * target.
 *
 * The stream is closed once a status is final or the token expired
 * ('kid:status-end', {reason}); after any other end ('timeout',
 * 'shutdown': 'kid:status-end' too) or a dropped connection it reconnects,
 * after 1 s and up to 30 s between tries, and after Retry-After when the
 * receiver answers 429 or 503. It gives up, with 'kid:status-error'
 * ({status}), when the receiver refuses the stream (400, 401, 403, 404), or
 * when the first connection fails outright (status 0: a network error or
 * a CORS refusal, which a page cannot tell apart).
 *
 * Returns close(), which closes the stream.
 */
export function watchStatus({ url, token, target = window, onStatus } = {}) {
  if (!url || !token) {
    throw new TypeError('watchStatus: url and token are required');
  }
  let closed = false;
  let connected = false;
  let abort = null;
  let timer = null;
  let delay = RETRY_FIRST_MS;
  const close = () => {
    closed = true;
    clearTimeout(timer);
    if (abort) {
      abort.abort();
    }
  };
  const fail = (status) => {
    if (!closed) {
      close();
      dispatch(target, 'kid:status-error', { status });
    }
  };
  const retry = (afterSeconds) => {
    if (closed) {
      return;
    }
    let wait = delay;
    if (Number.isFinite(afterSeconds) && afterSeconds > 0) {
      wait = Math.min(afterSeconds, RETRY_AFTER_MAX_S) * 1000;
    }
    delay = Math.min(delay * 2, RETRY_MAX_MS);
    timer = setTimeout(connect, wait);
  };
  // onEvent handles one event and reports whether the stream is done.
  const onEvent = ({ event, data }) => {
    let value;
    try {
      value = JSON.parse(data);
    } catch (_) {
      return false;
    }
    if (!isObject(value)) {
      return false;
    }
    if (event === 'status') {
      if (typeof onStatus === 'function') {
        try {
          onStatus(value);
        } catch (_) {
          // The page's callback reports its own errors.
        }
      }
      dispatch(target, 'kid:status', value);
      if (value.final === true) {
        close();
        return true;
      }
    } else if (event === 'end') {
      // The receiver says why it ends a stream: after a final status
      // (closed above already), when the token expired (a reconnect would
      // be refused), after a time limit or at its shutdown (reconnect, to
      // this or another replica).
      const reason = typeof value.reason === 'string' ? value.reason : '';
      if (reason === 'final' || reason === 'expired') {
        close();
      }
      dispatch(target, 'kid:status-end', { reason });
      return true;
    }
    return false;
  };
  const read = async (body) => {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        return;
      }
      buffer += value;
      const { events, rest } = parseEvents(buffer);
      buffer = rest;
      for (const event of events) {
        if (onEvent(event)) {
          reader.cancel().catch(() => {});
          return;
        }
      }
    }
  };
  const connect = async () => {
    if (closed) {
      return;
    }
    abort = new AbortController();
    let resp;
    try {
      resp = await fetch(url, {
        headers: { Authorization: 'Bearer ' + token, Accept: 'text/event-stream' },
        mode: 'cors',
        cache: 'no-store',
        signal: abort.signal,
      });
    } catch (_) {
      if (connected) {
        retry();
      } else {
        fail(0);
      }
      return;
    }
    if (resp.status === 429 || resp.status === 503) {
      resp.body?.cancel().catch(() => {});
      retry(Number(resp.headers.get('Retry-After')));
      return;
    }
    if (resp.status !== 200 || !resp.body) {
      resp.body?.cancel().catch(() => {});
      fail(resp.status);
      return;
    }
    connected = true;
    delay = RETRY_FIRST_MS;
    try {
      await read(resp.body);
    } catch (_) {
      // Dropped, or closed by the page.
    }
    retry();
  };
  connect().catch(() => {});
  return close;
}
