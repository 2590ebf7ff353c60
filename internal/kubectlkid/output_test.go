package kubectlkid_test

import (
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/internal/scheme"
)

// decodeList reads what -o json or -o yaml printed back as kubectl would:
// a v1 List whose items decode, by their apiVersion and kind, into the
// operator's types.
func decodeList(out string) []runtime.Object {
	GinkgoHelper()
	raw, err := yaml.YAMLToJSON([]byte(out)) // JSON is YAML too
	Expect(err).NotTo(HaveOccurred())
	var list metav1.List
	Expect(yaml.Unmarshal(raw, &list)).To(Succeed())
	Expect(list.APIVersion).To(Equal("v1"))
	Expect(list.Kind).To(Equal("List"))
	decoder := serializer.NewCodecFactory(scheme.Scheme).UniversalDeserializer()
	objs := make([]runtime.Object, 0, len(list.Items))
	for _, item := range list.Items {
		obj, _, err := decoder.Decode(item.Raw, nil, nil)
		Expect(err).NotTo(HaveOccurred(), string(item.Raw))
		objs = append(objs, obj)
	}
	return objs
}

var _ = Describe("kubectl kid events -o", func() {
	It("prints the events as a List of KidEvents as the API returns them, by the time received", func() {
		p := newProduct(nil)
		ns := p.Namespace
		first := send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusInProgress})
		h.Clock.Advance(2 * time.Second)
		second := send(p, kid.SessionDelete, kidsim.Fields{SessionID: "s-9"})
		for _, name := range []string{first, second} {
			getEvent(ns, name, func(g Gomega, e *kidv1.KidEvent) { g.Expect(e.Status.Phase).To(Equal(kidv1.EventApplied)) })
		}

		for _, format := range []string{"json", "yaml"} {
			r := kubectl(ns, nil, "events", "-o", format)
			Expect(r.err).NotTo(HaveOccurred())
			objs := decodeList(r.out)
			Expect(objs).To(HaveLen(2))
			for i, name := range []string{first, second} {
				e, ok := objs[i].(*kidv1.KidEvent)
				Expect(ok).To(BeTrue(), format)
				Expect(e.Kind).To(Equal("KidEvent"))
				Expect(e.ManagedFields).To(BeEmpty())
				stored := &kidv1.KidEvent{}
				Expect(h.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, stored)).To(Succeed())
				stored.ManagedFields = nil
				stored.SetGroupVersionKind(kidv1.GroupVersion.WithKind("KidEvent"))
				Expect(e).To(Equal(stored), "%s: %s as stored", format, name)
			}
		}

		r := kubectl(ns, nil, "events", "--type", kid.SessionDelete, "-o", "json")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(decodeList(r.out)).To(ConsistOf(HaveField("ObjectMeta.Name", second)))
		r = kubectl(ns, nil, "events", "--product", "other", "-o", "json")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(decodeList(r.out)).To(BeEmpty(), "an empty List, not a message")
		Expect(strings.TrimSpace(r.errOut)).To(BeEmpty())

		Expect(kubectl(ns, nil, "events", "-o", "wide").err).To(MatchError(ContainSubstring(`--output "wide" is not supported`)))
		Expect(kubectl(ns, nil, "events", "-o", "json", "--watch").err).To(MatchError("--output goes without --watch"))
	})
})
