package emulator

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

func TestConsolePoints(t *testing.T) {
	body := `{"v":1,"device":"d","records":[
		{"seq":7,"kind":"reading","time":"2026-03-11T05:20:30Z","shipment":"S","env":{"tempC":4.5,"pressureHPa":1001},"fix":{"mode":3,"lat":45.3,"lon":9.5},"alerts":["temp_low"]},
		{"seq":8,"kind":"reading","time":"2026-03-11T05:25:30Z","envFault":"bus error","fix":{"mode":1,"lat":0,"lon":0}},
		{"seq":9,"kind":"gap","time":"2026-03-11T05:30:30Z","gap":{"firstSeq":1,"lastSeq":6,"count":6}},
		{"seq":10,"kind":"seal","time":"2026-03-11T05:35:30Z","shipment":"S","env":{"tempC":5,"pressureHPa":1000}}]}`
	pts := consolePoints([]byte(body))
	if len(pts) != 4 {
		t.Fatalf("consolePoints = %d points, want 4", len(pts))
	}
	p := pts[0]
	if p.Seq != 7 || p.Kind != "" || p.Shipment != "S" || *p.TempC != 4.5 || *p.Pressure != 1001 || *p.Lat != 45.3 || *p.Lon != 9.5 ||
		len(p.Alerts) != 1 || !p.Time.Equal(time.Date(2026, 3, 11, 5, 20, 30, 0, time.UTC)) {
		t.Errorf("reading %+v", p)
	}
	if p := pts[1]; p.TempC != nil || p.Lat != nil {
		t.Errorf("a failed reading without a fix drew values: %+v", p)
	}
	if pts[2].Kind != "gap" || pts[3].Kind != "seal" || *pts[3].TempC != 5 {
		t.Errorf("gap and seal %+v %+v", pts[2], pts[3])
	}
	for _, bad := range []string{"", "plain text", "[]", `{"records":"x"}`, `{"records":[{"time":"yesterday"}]}`} {
		if got := consolePoints([]byte(bad)); len(got) != 0 {
			t.Errorf("consolePoints(%q) = %v, want none", bad, got)
		}
	}
}

func FuzzConsolePoints(f *testing.F) {
	f.Add([]byte(`{"v":1,"device":"d","records":[{"seq":1,"kind":"reading","time":"2026-03-11T05:20:30Z","env":{"tempC":4.5,"pressureHPa":1001},"fix":{"mode":3,"lat":45.3,"lon":9.5}}]}`))
	f.Add([]byte(`{"records":[{"fix":{"lat":1}},{"env":{}},null]}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, body []byte) {
		pts := consolePoints(body)
		var b struct {
			Records []json.RawMessage `json:"records"`
		}
		if len(pts) > 0 && (json.Unmarshal(body, &b) != nil || len(pts) != len(b.Records)) {
			t.Fatalf("%d points from a body with %d records", len(pts), len(b.Records))
		}
		for _, p := range pts {
			if (p.Lat == nil) != (p.Lon == nil) {
				t.Fatalf("point with half a position: %+v", p)
			}
			if _, err := json.Marshal(p); err != nil {
				t.Fatalf("point does not encode: %v", err)
			}
		}
	})
}

func TestFeedAfterAndNotify(t *testing.T) {
	f := newFeed[Event](10)
	seq := func(ev Event) int64 { return ev.Seq }
	add := func() Event { return f.add(func(s int64) Event { return Event{Seq: s} }) }
	for range 25 { // the feed drops its oldest items past 10
		add()
	}
	if got := feedLast(f, seq); got != 25 {
		t.Fatalf("feedLast = %d, want 25", got)
	}
	got := feedAfter(f, 20, seq, 3)
	if len(got) != 3 || got[0].Seq != 21 || got[2].Seq != 23 {
		t.Errorf("feedAfter(20, max 3) = %v", got)
	}
	if got := feedAfter(f, 0, seq, 100); len(got) == 0 || got[0].Seq <= 10 || got[len(got)-1].Seq != 25 {
		t.Errorf("feedAfter(0) = %v, want the items kept", got)
	}
	if got := feedAfter(f, 25, seq, 100); len(got) != 0 {
		t.Errorf("feedAfter(25) = %v, want none", got)
	}

	// Already there: the channel is ready at once.
	ch, cancel := feedNotify(f, 24, seq)
	select {
	case <-ch:
	default:
		t.Error("feedNotify(24) not ready with item 25 in the feed")
	}
	cancel()

	// Not yet: ready once the next item arrives, and only then.
	ch, cancel = feedNotify(f, 25, seq)
	select {
	case ev := <-ch:
		t.Fatalf("feedNotify(25) ready with %v before anything was added", ev)
	default:
	}
	add()
	select {
	case ev := <-ch:
		if ev.Seq != 26 {
			t.Errorf("notified with %v, want item 26", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("feedNotify not woken by a new item")
	}
	cancel()

	// A withdrawn request leaves nothing behind.
	_, cancel = feedNotify(f, 26, seq)
	cancel()
	f.mu.Lock()
	n := len(f.waiters)
	f.mu.Unlock()
	if n != 0 {
		t.Errorf("%d waiters left after cancel", n)
	}
}

func TestConsoleResume(t *testing.T) {
	req := func(query, lastID string) *http.Request {
		r, err := http.NewRequestWithContext(context.Background(), "GET", "https://x/console/api/stream"+query, nil)
		if err != nil {
			t.Fatal(err)
		}
		if lastID != "" {
			r.Header.Set("Last-Event-ID", lastID)
		}
		return r
	}
	for _, tc := range []struct {
		query, lastID string
		t, e          int64
		bad           bool
	}{
		{"", "", -1, -1, false},
		{"?after=5&events=7", "", 5, 7, false},
		{"?after=5", "", 5, -1, false},
		{"?after=5&events=7", "9.11", 9, 11, false},
		{"?after=5", "garbage", 5, -1, false},
		{"?after=-1", "", 0, 0, true},
		{"?events=x", "", 0, 0, true},
	} {
		ts, es, err := consoleResume(req(tc.query, tc.lastID))
		if (err != nil) != tc.bad || (!tc.bad && (ts != tc.t || es != tc.e)) {
			t.Errorf("consoleResume(%q, Last-Event-ID %q) = %d, %d, %v; want %d, %d, error %v", tc.query, tc.lastID, ts, es, err, tc.t, tc.e, tc.bad)
		}
	}
}
