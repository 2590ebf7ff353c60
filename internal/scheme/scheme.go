// Package scheme holds the runtime scheme kid-operator's clients use: the
// built-in kinds, CustomResourceDefinitions and kid.dev/v1alpha1.
package scheme

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// Scheme knows every kind kid-operator reads or writes.
var Scheme = runtime.NewScheme()

func init() {
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, kidv1.AddToScheme} {
		if err := add(Scheme); err != nil {
			panic(err)
		}
	}
}
