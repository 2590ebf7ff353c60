package inbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
)

// Erasure is a data-subject request that reached the team another way than
// k-ID (an email to support, a regulator's letter): erase one player's
// session, or every player of one k-ID account. Exactly one id is set.
type Erasure struct {
	// SessionID erases the player of one session, as k-ID's Session.Delete.
	SessionID string
	// KUID erases every player of one k-ID account, as k-ID's
	// Account.Delete.
	KUID string
}

// BuildErasure returns the KidEvent of a manual erasure: the Session.Delete
// or Account.Delete k-ID would have sent, with source manual. It goes through
// Build, so it has the name, labels and subject of k-ID's own event: the
// controllers fold it and run the product's actions exactly as for k-ID's,
// and whichever of the two arrives second is a duplicate (the same fact,
// stored once). signedAt is unset, since k-ID signed nothing; the fold then
// dates the erasure by receivedAt.
func BuildErasure(product *kidv1.KidProduct, req Erasure, now time.Time) (*kidv1.KidEvent, error) {
	var eventType string
	data := map[string]any{}
	switch {
	case (req.SessionID == "") == (req.KUID == ""):
		return nil, errors.New("an erasure names exactly one of a session id and a kuid")
	case req.SessionID != "":
		eventType, data["id"] = kid.SessionDelete, req.SessionID
	default:
		eventType, data["kuid"] = kid.AccountDelete, req.KUID
	}
	if product.Spec.ProductID != 0 {
		data["productId"] = product.Spec.ProductID
	}
	body, err := json.Marshal(map[string]any{"eventType": eventType, "data": data})
	if err != nil {
		return nil, err
	}
	// The same parse as a delivery's, so the same bounds on ids hold.
	env, err := kid.ParseEnvelope(body)
	if err != nil {
		return nil, fmt.Errorf("building the %s event: %w", eventType, err)
	}
	event, err := Build(product, env, body, now, now, kidv1.SourceManual)
	if err != nil {
		return nil, err
	}
	event.Spec.SignedAt = nil
	return event, nil
}
