// Package v1alpha1 holds the kid.dev/v1alpha1 API: KidProduct, KidEvent,
// KidUser and KidAction.
//
// +kubebuilder:object:generate=true
// +groupName=kid.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "kid.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this package with a scheme. It is
	// apimachinery's, not controller-runtime's (deprecated there), so that
	// the API package depends on apimachinery alone, as API packages should.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the kinds of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// addKnownTypes registers each kind of this package with its list.
func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&KidProduct{}, &KidProductList{},
		&KidEvent{}, &KidEventList{},
		&KidUser{}, &KidUserList{},
		&KidAction{}, &KidActionList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
