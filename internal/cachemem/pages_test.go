package cachemem

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// pagedUsers is an API server without a watch cache, as the reflector meets
// it: no streamed list, and lists in pages. It keeps each page it answered,
// and when the next is asked for, notes whether the items of the last one
// were stripped already (what the pager keeps of them).
type pagedUsers struct {
	t     *testing.T
	pages int // how many pages the list has
	n     int // players per page

	mu       sync.Mutex
	answered []*kidv1.KidUserList
	stripped []bool // per page: stripped before the next page was asked for
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
	if page > 0 {
		p.stripped = append(p.stripped, allSkeletons(p.answered[page-1]))
	}
	list := &kidv1.KidUserList{ListMeta: metav1.ListMeta{ResourceVersion: "100"}}
	for i := range p.n {
		list.Items = append(list.Items, *decode(p.t, playerJSON(p.t, page*p.n+i)))
	}
	if page+1 < p.pages {
		list.Continue = fmt.Sprintf("page-%d", page+1)
	}
	p.answered = append(p.answered, list)
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

func allSkeletons(l *kidv1.KidUserList) bool {
	for i := range l.Items {
		if !IsSkeleton(&l.Items[i]) || l.Items[i].Status.Session.Permissions != nil {
			return false
		}
	}
	return len(l.Items) > 0
}

// Without the watch cache, an informer's initial list comes in pages, which
// client-go gathers before its store's transform runs: each page is
// stripped to skeletons as it arrives, before the next is asked for.
func TestInitialListIsStrippedPerPage(t *testing.T) {
	lw := &pagedUsers{t: t, pages: 4, n: 5}
	tf := Transform()
	informer := NewInformer(tf)(lw, &kidv1.KidUser{}, 0, toolscache.Indexers{})
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
	for i, s := range lw.stripped {
		if !s {
			t.Errorf("page %d was not stripped before page %d was asked for", i, i+1)
		}
	}
	if !allSkeletons(lw.answered[3]) {
		t.Error("the last page was not stripped")
	}
	items := informer.GetStore().List()
	if len(items) != 20 {
		t.Fatalf("the store holds %d players, want 20", len(items))
	}
	for _, o := range items {
		if !IsSkeleton(o.(*kidv1.KidUser)) {
			t.Fatalf("the store holds a player that is not a skeleton: %s", o.(*kidv1.KidUser).Name)
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
