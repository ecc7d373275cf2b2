// What the test page does in Chromium, with the SDK's browser build as any app would load it.
// Plain JavaScript, served as is: nothing here is transpiled for the browser.
import { ConnectionError, HttpError, KeywardClient, RateLimitError } from "/sdk.js";

/**
 * The user's own keys: list, create, hear key.created on the socket, and never another user's
 * (`othersJwt` makes a key as another user while this one listens; `othersKeyId` is theirs).
 */
window.ownKeys = async ({ apiKey, baseUrl, jwt, othersJwt, othersKeyId }) => {
  const client = new KeywardClient({ apiKey, baseUrl, jwt });
  const before = (await client.me.list().toArray()).map((key) => key.name);
  const created = await client.me.create({ name: "from the browser" });

  // Every event heard; the first key's own event may still be on its way when the socket opens.
  const socket = client.events();
  const heard = [];
  let secondId;
  const heardSecond = new Promise((resolve) =>
    socket.on("event", ({ event }) => {
      // `key` is absent from events about no API key (webhook.disabled, a leaked root key).
      heard.push({ type: event.type, id: event.key?.id, owner: event.key?.owner_user_id });
      if (event.key?.id === secondId) resolve();
    }),
  );
  await new Promise((resolve) => socket.on("connected", resolve));
  const others = await new KeywardClient({ apiKey, baseUrl, jwt: othersJwt }).me.create({ name: "another user's" });
  const second = await client.me.create({ name: "while listening" });
  secondId = second.id;
  if (!heard.some((event) => event.id === secondId)) await heardSecond;
  socket.close();

  const after = (await client.me.list().toArray()).map((key) => key.name).sort();
  let othersKey;
  try {
    await client.me.revoke(othersKeyId);
    othersKey = "revoked another user's key!";
  } catch (error) {
    othersKey = error instanceof HttpError ? `${error.status} ${error.code}` : String(error);
  }
  return { othersNewKeyId: others.id, before, createdOwner: created.owner_user_id, secretPrefix: created.secret.slice(0, 3), secondId: second.id, heard, after, othersKey };
};

/** One call from this page's origin: "allowed", or "blocked" when CORS stops it. */
window.callFromHere = async ({ apiKey, baseUrl, jwt }) => {
  try {
    await new KeywardClient({ apiKey, baseUrl, jwt, maxRetries: 0 }).me.list();
    return "allowed";
  } catch (error) {
    return error instanceof ConnectionError ? "blocked" : String(error);
  }
};

/**
 * Demo sessions until the server's per-IP limit (SPEC §4.3: 5 a minute) answers 429: what the
 * SDK made of it, `retryAfter` included (readable only if CORS exposes `Retry-After`).
 */
window.rateLimited = async ({ baseUrl }) => {
  const client = new KeywardClient({ baseUrl });
  for (let attempt = 1; attempt <= 12; attempt++) {
    try {
      await client.demo.createSession();
    } catch (error) {
      return {
        attempt,
        rateLimitError: error instanceof RateLimitError,
        status: error instanceof HttpError ? error.status : undefined,
        code: error instanceof HttpError ? error.code : String(error),
        retryAfter: error instanceof RateLimitError ? error.retryAfter : undefined,
      };
    }
  }
  return { attempt: 13 };
};

window.ready = true;
