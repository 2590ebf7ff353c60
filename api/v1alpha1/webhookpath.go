package v1alpha1

// WebhookPathPrefix starts the receiver's path of every product's webhook
// deliveries. It is part of the URL users paste into Compliance Studio, so
// changing it breaks every configured product.
const WebhookPathPrefix = "/webhooks/"

// WebhookPath is the receiver's path for the deliveries of the KidProduct
// namespace/product: what the controller publishes in status.webhookPath,
// what the receiver routes, and what the tools and tests POST to. Several
// k-ID event types carry no product id, so the path is what tells the
// receiver which product's secret verifies a delivery (kid-events-spec.md
// §1.1). Both parts are DNS labels, so nothing needs escaping.
func WebhookPath(namespace, product string) string {
	return WebhookPathPrefix + namespace + "/" + product
}
