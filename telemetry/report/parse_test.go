package report

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// event is a telemetry.jsonl line from device dev with message id mid.
func event(dev, mid, payload string) string {
	return fmt.Sprintf(`{"event":{"origin":%q,"properties":{"system":{"message_id":%q,"content_type":"application/json"},"application":{}},"annotations":{"iothub-enqueuedtime":1777881600000},"payload":%s}}`, dev, mid, payload)
}

func batchJSON(dev string, recs ...string) string {
	return fmt.Sprintf(`{"v":1,"device":%q,"records":[%s]}`, dev, strings.Join(recs, ","))
}

func recJSON(seq int, clock string, retimed bool, tempC float64) string {
	rt := ""
	if retimed {
		rt = `,"retimed":true`
	}
	return fmt.Sprintf(`{"seq":%d,"kind":"reading","time":"2026-05-04T08:%02d:00+02:00","clock":%q%s,"shipment":"S","env":{"tempC":%g,"pressureHPa":1000}}`, seq, seq, clock, rt, tempC)
}

func TestParse(t *testing.T) {
	lines := []string{
		event("d", "d-1", batchJSON("d", recJSON(1, "gps", false, 5))),
		event("d", "d-1", batchJSON("d", recJSON(1, "gps", false, 5))), // resent, same id
		"",
		event("d", "d-2-3-2", batchJSON("d", recJSON(2, "unsynced", false, 4), recJSON(3, "gps", false, 6))),
		event("d", "d-2", batchJSON("d", recJSON(2, "gps", true, 4.5))),                                       // the retimed copy wins
		event("e", "e-1", `"`+strings.ReplaceAll(batchJSON("e", recJSON(1, "gps", false, 7)), `"`, `\"`)+`"`), // body without the JSON content type
		event("d", "will", `"offline"`),                                // not telemetry
		event("d", "v2", `{"v":2,"device":"d","records":[]}`),          // another schema version
		event("d", "other", `{"hello":"world"}`),                       // another JSON body
		event("x", "x-1", batchJSON("y", recJSON(9, "gps", false, 5))), // origin wins over the body
		batchJSON("z", recJSON(4, "system", false, 3)),                 // a bare batch
		`{"event": {"origin": "d", "payload": {"v":1,"device":"d","records":[{"seq":"bad"}]}}}`,
		`not json at all`,
	}
	tel, err := Parse(strings.NewReader(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	want := InputStats{Lines: 12, Messages: 7, DuplicateMessages: 1, Records: 8, DuplicateRecords: 2, Skipped: 3, Malformed: 2, FirstMalformedLine: 12, DeviceMismatch: 1}
	if diff := cmp.Diff(want, tel.Stats); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
	type key struct {
		dev     string
		seq     uint64
		clock   string
		copies  int
		tempC   float64
		retimed bool
	}
	var got []key
	for _, r := range tel.Records {
		got = append(got, key{r.Device, r.Seq, r.Clock, r.Copies, r.Env.TempC, r.Retimed})
	}
	wantRecs := []key{{"d", 1, "gps", 2, 5, false}, {"d", 2, "gps", 2, 4.5, true}, {"d", 3, "gps", 1, 6, false}, {"e", 1, "gps", 1, 7, false}, {"x", 9, "gps", 1, 5, false}, {"z", 4, "system", 1, 3, false}}
	if diff := cmp.Diff(wantRecs, got, cmp.AllowUnexported(key{})); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	if loc := tel.Records[0].Time.Location(); loc != time.UTC {
		t.Errorf("record time in %v, want UTC", loc)
	}
	if want := time.UnixMilli(1777881600000).UTC(); !tel.Records[0].Enqueued.Equal(want) {
		t.Errorf("Enqueued = %v, want %v", tel.Records[0].Enqueued, want)
	}
}

func TestParseRejectsNonTelemetry(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"text", "hello\nworld\n", "line 1"},
		{"json of another kind", `{"a":1}` + "\n", "neither an event nor a telemetry batch"},
	} {
		_, err := Parse(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "trackerctl emulator") {
			t.Errorf("%s: err = %v, want one mentioning %q and the expected format", tc.name, err, tc.want)
		}
	}
	long := bytes.Repeat([]byte("x"), maxLine+10)
	if _, err := Parse(bytes.NewReader(long)); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("long line: err = %v", err)
	}
	// Empty input is no error: it holds no shipment.
	tel, err := Parse(strings.NewReader(""))
	if err != nil || len(tel.Records) != 0 {
		t.Errorf("empty input: %v, %d records", err, len(tel.Records))
	}
	if _, err := ReadFile(t.TempDir() + "/none.jsonl"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing file: err = %v", err)
	}
}

func TestParseTornLastLine(t *testing.T) {
	// A file read while the emulator appends can end in half a line.
	full := event("d", "d-1", batchJSON("d", recJSON(1, "gps", false, 5)))
	in := full + "\n" + full[:len(full)/2]
	tel, err := Parse(strings.NewReader(in))
	if err != nil || len(tel.Records) != 1 || tel.Stats.Malformed != 1 {
		t.Errorf("Parse = %v, %d records, %d malformed; want 1 record, 1 malformed", err, len(tel.Records), tel.Stats.Malformed)
	}
}

func TestShipments(t *testing.T) {
	tel := recorded(t)
	got := tel.Shipments()
	var names []string
	for _, s := range got {
		names = append(names, fmt.Sprintf("%s/%s/%d/%v", s.Device, s.Shipment, s.Records, s.Sealed))
	}
	want := []string{"trk-0042/" + recShipment + "/102/true", "trk-0042/" + recShipment2 + "/32/true", "trk-0107/" + recOtherShip + "/6/false"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("Shipments (-want +got):\n%s", diff)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(event("d", "d-1", batchJSON("d", recJSON(1, "gps", false, 5)))))
	f.Add([]byte(batchJSON("z", recJSON(4, "unsynced", false, 3))))
	f.Add([]byte(`{"event":{"payload":"{\"v\":1}"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tel, err := Parse(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, s := range tel.Shipments() {
			rep, err := Analyze(tel, Options{Shipment: s.Shipment, Device: s.Device})
			if err != nil {
				continue
			}
			if err := rep.WriteHTML(&bytes.Buffer{}, RenderOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	})
}
