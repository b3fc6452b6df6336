package likeness

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// WebhookTolerance is how far a webhook's timestamp may be from now before VerifyWebhookSignature refuses it,
// so a captured delivery cannot be replayed later (the Standard Webhooks default).
const WebhookTolerance = 5 * time.Minute

// ErrWebhookSignature is wrapped by every error of VerifyWebhookSignature: the request is not a genuine,
// recent delivery and must be answered with an error status and otherwise ignored.
var ErrWebhookSignature = errors.New("likeness: webhook signature")

// VerifyWebhookSignature checks that a POST to a training job's webhook (trainerv1.Webhook) comes from
// Likeness: the Standard Webhooks scheme, with the headers
//
//	webhook-id:        the delivery's id (drop repeats by it: a delivery can arrive more than once)
//	webhook-timestamp: Unix seconds when it was signed
//	webhook-signature: "v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">", space-separated when several
//
// keyed with the webhook's secret (CreateTrainingJobRequest.Webhook.Secret: a "whsec_<base64>" secret's decoded
// bytes, as Standard Webhooks libraries use it, else its bytes as given). body must
// be the raw request body, before any JSON decoding. It returns nil when one signature matches and the
// timestamp is within WebhookTolerance of now.
//
//	body, _ := io.ReadAll(r.Body)
//	if err := likeness.VerifyWebhookSignature(secret, r.Header, body); err != nil {
//		http.Error(w, "bad signature", http.StatusUnauthorized)
//		return
//	}
func VerifyWebhookSignature(secret string, headers http.Header, body []byte) error {
	return VerifyWebhookSignatureAt(secret, headers, body, time.Now(), WebhookTolerance)
}

// VerifyWebhookSignatureAt is VerifyWebhookSignature at the time now with its own tolerance (0: any timestamp
// is accepted, for re-checking stored deliveries).
func VerifyWebhookSignatureAt(secret string, headers http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	fail := func(format string, args ...interface{}) error {
		return fmt.Errorf("%w: %s", ErrWebhookSignature, fmt.Sprintf(format, args...))
	}
	if secret == "" {
		return fail("no secret to check against")
	}
	id, timestamp, signatures := headers.Get("webhook-id"), headers.Get("webhook-timestamp"), headers.Get("webhook-signature")
	if id == "" || timestamp == "" || signatures == "" {
		return fail("missing webhook-id, webhook-timestamp or webhook-signature header")
	}
	seconds, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fail("webhook-timestamp %q is not Unix seconds", timestamp)
	}
	if tolerance > 0 {
		age := now.Sub(time.Unix(seconds, 0))
		if age > tolerance || age < -tolerance {
			return fail("webhook-timestamp is %s away from now, over the %s tolerance", age.Round(time.Second), tolerance)
		}
	}
	key := []byte(secret)
	if encoded := strings.TrimPrefix(secret, "whsec_"); encoded != secret {
		if key, err = base64.StdEncoding.DecodeString(encoded); err != nil {
			return fail("a whsec_ secret must be base64 after the prefix")
		}
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + timestamp + "."))
	mac.Write(body)
	expected := mac.Sum(nil)
	for _, signature := range strings.Fields(signatures) {
		version, encoded, found := strings.Cut(signature, ",")
		if !found || version != "v1" {
			continue // another scheme (v1a: asymmetric), or a malformed entry
		}
		decoded, err := base64.StdEncoding.DecodeString(encoded)
		if err == nil && hmac.Equal(decoded, expected) {
			return nil
		}
	}
	return fail("no v1 signature matches")
}
