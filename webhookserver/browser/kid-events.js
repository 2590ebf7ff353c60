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

/**
 * watchStatus follows the operator's view of one player (the subject of the
 * token): it opens the receiver's status stream,
 * `new EventSource(url + '?token=' + encodeURIComponent(token))` with url
 * https://<receiver>/browser/<namespace>/<product>/status, and for every
 * `event: status` message (data: {"subject":{"kind","id"},"user","consent",
 * "verification","session","final"}) calls onStatus(status) and dispatches
 * 'kid:status' on target. The stream is closed once a status is final or
 * the token expired ('kid:status-end', {reason}), or when the receiver
 * refuses it ('kid:status-error').
 *
 * Returns close(), which closes the stream.
 */
export function watchStatus({ url, token, target = window, onStatus } = {}) {
  if (!url || !token) {
    throw new TypeError('watchStatus: url and token are required');
  }
  const source = new EventSource(url + '?token=' + encodeURIComponent(token));
  const close = () => source.close();
  source.addEventListener('status', (event) => {
    let status;
    try {
      status = JSON.parse(event.data);
    } catch (_) {
      return;
    }
    if (!isObject(status)) {
      return;
    }
    if (typeof onStatus === 'function') {
      try {
        onStatus(status);
      } catch (_) {
        // The page's callback reports its own errors.
      }
    }
    dispatch(target, 'kid:status', status);
    if (status.final === true) {
      close();
    }
  });
  // The receiver says why it ends a stream: after a final status (closed
  // above already), when the token expired (a reconnect would be refused),
  // after a time limit or at its shutdown (EventSource reconnects, to this
  // or another replica).
  source.addEventListener('end', (event) => {
    let reason = '';
    try {
      reason = JSON.parse(event.data).reason;
    } catch (_) {
      // No reason given.
    }
    if (reason === 'final' || reason === 'expired') {
      close();
    }
    dispatch(target, 'kid:status-end', { reason });
  });
  source.addEventListener('error', () => {
    // EventSource reconnects by itself after a dropped connection; it gives
    // up (CLOSED) when the receiver answers anything but a stream (401, 403,
    // 404, 429).
    if (source.readyState === EventSource.CLOSED) {
      dispatch(target, 'kid:status-error', { readyState: source.readyState });
    }
  });
  return close;
}
