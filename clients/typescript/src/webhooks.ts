// Verifying the webhooks a training job POSTs (Standard Webhooks, https://www.standardwebhooks.com/).
//
// Every POST carries `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`: one or more
// space-separated `v1,<base64 HMAC-SHA256>` entries, the HMAC of "{id}.{timestamp}.{body}" keyed with the job's
// webhook secret (protos/likeness/trainer/v1/trainer_service.proto, message Webhook): a `whsec_<base64>` secret's
// decoded bytes, as the Standard Webhooks libraries use it, any other secret's UTF-8 bytes. A receiver checks the
// signature over the raw body bytes, exactly as received, and refuses stale timestamps so a captured request
// cannot be replayed later.
import { createHmac, timingSafeEqual } from "crypto";

/** Request headers: Node's `req.headers` (lower-case keys), a plain object, or a fetch `Headers`. */
export type WebhookHeaders =
  | Record<string, string | string[] | undefined>
  | { get(name: string): string | null | undefined };

export interface VerifyWebhookOptions {
  /** Largest difference in seconds between `webhook-timestamp` and now (default 300, as Standard Webhooks). */
  toleranceSeconds?: number;
  /** The current time (a Date or milliseconds since the epoch); default: now. */
  now?: Date | number;
}

function header(headers: WebhookHeaders, name: string): string {
  if (typeof (headers as { get?: unknown }).get === "function") {
    return (headers as { get(name: string): string | null | undefined }).get(name) ?? "";
  }
  const record = headers as Record<string, string | string[] | undefined>;
  const key = Object.keys(record).find((candidate) => candidate.toLowerCase() === name);
  const value = key === undefined ? undefined : record[key];
  return (Array.isArray(value) ? value.join(" ") : value) ?? "";
}

/** The Standard Webhooks prefix of a base64-encoded secret. */
export const WEBHOOK_SECRET_PREFIX = "whsec_";

/** The HMAC key of a secret: a `whsec_<base64>` secret's decoded bytes, another string's UTF-8 bytes, bytes as
 * given. Throws for a `whsec_` secret that is not base64 after the prefix. */
export function webhookSigningKey(secret: string | Uint8Array): Buffer {
  if (typeof secret !== "string") {
    return Buffer.from(secret);
  }
  if (!secret.startsWith(WEBHOOK_SECRET_PREFIX)) {
    return Buffer.from(secret, "utf8");
  }
  const encoded = secret.slice(WEBHOOK_SECRET_PREFIX.length);
  // Buffer.from(..., "base64") skips what is not base64; a typo in a secret must not silently change the key.
  if (encoded.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(encoded)) {
    throw new TypeError(`a ${WEBHOOK_SECRET_PREFIX} secret must be base64 after the prefix`);
  }
  return Buffer.from(encoded, "base64");
}

/** The `webhook-signature` value a sender puts on a message: `v1,<base64 HMAC-SHA256>`. */
export function signWebhook(
  secret: string | Uint8Array,
  id: string,
  timestamp: number | string,
  body: string | Uint8Array,
): string {
  const mac = createHmac("sha256", webhookSigningKey(secret));
  mac.update(`${id}.${timestamp}.`);
  mac.update(typeof body === "string" ? Buffer.from(body, "utf8") : body);
  return `v1,${mac.digest("base64")}`;
}

/**
 * True when a webhook POST is genuine: one of its `webhook-signature` entries is the HMAC-SHA256 of
 * "{webhook-id}.{webhook-timestamp}.{body}" keyed with `secret` (the job's webhook secret, as given in
 * CreateTrainingJobRequest.webhook.secret; see `webhookSigningKey`), and its timestamp is
 * within `toleranceSeconds` of now. Pass the raw body (a Buffer, or the exact string received), not re-encoded
 * JSON. Use `webhook-id` to drop repeats: a delivery retried after a timeout keeps its id.
 *
 *   app.post("/hooks/likeness", express.raw({ type: "application/json" }), (req, res) => {
 *     if (!verifyWebhookSignature(process.env.WEBHOOK_SECRET!, req.headers, req.body)) return res.sendStatus(401);
 *     const event = JSON.parse(req.body.toString("utf8"));
 *     res.sendStatus(204);
 *   });
 */
export function verifyWebhookSignature(
  secret: string | Uint8Array,
  headers: WebhookHeaders,
  body: string | Uint8Array,
  options: VerifyWebhookOptions = {},
): boolean {
  const id = header(headers, "webhook-id");
  const timestamp = header(headers, "webhook-timestamp");
  const signatures = header(headers, "webhook-signature");
  let key: Buffer;
  try {
    key = webhookSigningKey(secret);
  } catch {
    return false;
  }
  if (!id || !/^\d{1,15}$/.test(timestamp) || !signatures || key.length === 0) {
    return false;
  }
  const nowMs = options.now === undefined ? Date.now() : Number(options.now);
  const tolerance = options.toleranceSeconds ?? 300;
  if (Math.abs(nowMs / 1000 - Number(timestamp)) > tolerance) {
    return false;
  }
  const expected = Buffer.from(signWebhook(secret, id, timestamp, body).slice("v1,".length), "base64");
  return signatures.split(" ").some((entry) => {
    const [version, signature] = entry.split(",", 2);
    if (version !== "v1" || !signature) return false;
    const given = Buffer.from(signature, "base64");
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}
