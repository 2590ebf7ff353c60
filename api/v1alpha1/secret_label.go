package v1alpha1

// SecretLabel, with the value SecretLabelValue, is the label a Secret must
// carry for kid-operator to use it: as a product's webhook, API key or relay
// token Secret, or as a KidAction's signing secret. A spec names a Secret of
// its own namespace, so without it whoever may write a KidProduct or a
// KidAction could have the operator use any Secret of the namespace (send
// it as a Bearer token, or sign a body of their choosing with it). The
// label is the Secret owner's consent. A Secret without it is refused with
// the reason SecretNotLabelled, and its data is not kept.
const (
	SecretLabel      = "kid.dev/secret" //nolint:gosec // G101: a label name, not a credential
	SecretLabelValue = "true"
)

// SecretLabels returns the labels that let kid-operator use a Secret, for
// code that creates one.
func SecretLabels() map[string]string {
	return map[string]string{SecretLabel: SecretLabelValue}
}
