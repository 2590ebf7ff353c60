package cachemem

import (
	"context"
	"fmt"
	runtime2 "runtime"
	"sync"
	"testing"
	"time"
	"weak"

	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// pagedUsers is an API server without a watch cache, as the reflector meets
// it: no streamed list, and lists in pages. It keeps a weak pointer to each
// page it answered, to tell whether anything holds on to one.
type pagedUsers struct {
	t     *testing.T
	pages int // how many pages the list has
	n     int // players per page

	mu       sync.Mutex
	answered []weak.Pointer[kidv1.KidUserList]
}

func (p *pagedUsers) ListWithContext(_ context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	page := 0
	if opts.Continue != "" {
		if _, err := fmt.Sscanf(opts.Continue, "page-%d", &page); err != nil {
			return nil, err
		}
	}
	list := &kidv1.KidUserList{ListMeta: metav1.ListMeta{ResourceVersion: "100"}}
	for i := range p.n {
		list.Items = append(list.Items, *decode(p.t, playerJSON(p.t, page*p.n+i)))
	}
	if page+1 < p.pages {
		list.Continue = fmt.Sprintf("page-%d", page+1)
	}
	p.answered = append(p.answered, weak.Make(list))
	return list, nil
}

func (p *pagedUsers) WatchWithContext(context.Context, metav1.ListOptions) (watch.Interface, error) {
	return watch.NewFake(), nil
}

func (p *pagedUsers) List(opts metav1.ListOptions) (runtime.Object, error) {
	return p.ListWithContext(context.Background(), opts)
}

func (p *pagedUsers) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return p.WatchWithContext(context.Background(), opts)
}

// No streamed list: the API server's watch cache is off.
func (p *pagedUsers) IsWatchListSemanticsUnSupported() bool { return true }

// Without the watch cache, an informer's initial list comes in pages, which
// client-go gathers before its store's transform runs: each page is
// replaced by its Users as it arrives, so what client-go gathers holds no
// decoded player, and once synced nothing holds a page.
func TestInitialListIsStrippedPerPage(t *testing.T) {
	lw := &pagedUsers{t: t, pages: 4, n: 5}
	tf := Transform()
	stores := &Stores{}
	informer := NewInformer(tf, stores)(lw, &kidv1.KidUser{}, 0, toolscache.Indexers{})
	if err := informer.SetTransform(tf); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go informer.RunWithContext(ctx)
	deadline := time.Now().Add(30 * time.Second)
	for !informer.HasSynced() {
		if time.Now().After(deadline) {
			t.Fatal("the informer never synced")
		}
		time.Sleep(10 * time.Millisecond)
	}
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if len(lw.answered) != 4 {
		t.Fatalf("%d pages listed, want 4", len(lw.answered))
	}
	runtime2.GC()
	for i, w := range lw.answered {
		if w.Value() != nil {
			t.Errorf("page %d is still held after the sync", i)
		}
	}
	items := informer.GetStore().List()
	if len(items) != 20 {
		t.Fatalf("the store holds %d players, want 20", len(items))
	}
	for _, o := range items {
		if _, ok := o.(*User); !ok {
			t.Fatalf("the store holds a %T, want a *User", o)
		}
	}
	if len(stores.all()) != 1 || len(stores.all()[0].List()) != 20 {
		t.Error("the informer's store is not in the stores")
	}
}

// A page of KidUsers becomes a page of Users, with the page's list metadata
// (the pager follows its continue token).
func TestPageBecomesUsers(t *testing.T) {
	page := &kidv1.KidUserList{ListMeta: metav1.ListMeta{ResourceVersion: "7", Continue: "next"}}
	for i := range 3 {
		page.Items = append(page.Items, *decode(t, playerJSON(t, i)))
	}
	out, err := transformItems(page, Transform())
	if err != nil {
		t.Fatal(err)
	}
	list, ok := out.(*metainternalversion.List)
	if !ok || list.Continue != "next" || list.ResourceVersion != "7" || len(list.Items) != 3 {
		t.Fatalf("page: %#v", out)
	}
	for i, o := range list.Items {
		if u, ok := o.(*User); !ok || u.GetName() != page.Items[i].Name {
			t.Errorf("item %d: %#v", i, o)
		}
	}
}

// Wrapped, a ListerWatcher still says whether it can stream a list.
func TestNewInformerKeepsStreamedLists(t *testing.T) {
	p := &pagedTransform{raw: &pagedUsers{t: t}}
	if !p.IsWatchListSemanticsUnSupported() {
		t.Error("the wrapper hides that the lister cannot stream")
	}
	q := &pagedTransform{raw: &toolscache.ListWatch{}}
	if q.IsWatchListSemanticsUnSupported() {
		t.Error("the wrapper says a lister that can stream cannot")
	}
}
