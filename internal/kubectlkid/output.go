package kubectlkid

import (
	"encoding/json"
	"fmt"
	"io"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"github.com/kid-operator/kid-operator/internal/scheme"
)

// checkOutput validates an -o value: json, yaml, or nothing for the table.
func checkOutput(output string) error {
	if output != "" && output != "json" && output != "yaml" {
		return fmt.Errorf("--output %q is not supported: json or yaml", output)
	}
	return nil
}

// printList prints objects as `kubectl get -o json|yaml` prints several: a
// List (apiVersion v1, kind List) whose items are the objects as the API
// returns them, each with its apiVersion and kind, without managedFields.
// kubectl, jq and yq read it as they read kubectl's own output.
func printList(w io.Writer, objs []client.Object, format string) error {
	list := &metav1.List{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "List"}, Items: []runtime.RawExtension{}}
	for _, obj := range objs {
		obj = obj.DeepCopyObject().(client.Object)
		obj.SetManagedFields(nil)
		gvk, err := apiutil.GVKForObject(obj, scheme.Scheme)
		if err != nil {
			return err
		}
		obj.GetObjectKind().SetGroupVersionKind(gvk)
		raw, err := json.Marshal(obj)
		if err != nil {
			return err
		}
		list.Items = append(list.Items, runtime.RawExtension{Raw: raw})
	}
	var p printers.ResourcePrinter = &printers.JSONPrinter{}
	if format == "yaml" {
		p = &printers.YAMLPrinter{}
	}
	return p.PrintObj(list, w)
}
