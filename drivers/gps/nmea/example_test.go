package nmea_test

import (
	"fmt"
	"strings"

	"github.com/coldchain/tracker/drivers/gps/nmea"
)

func ExampleDecoder() {
	capture := "$GNRMC,171926.00,A,4404.14063,N,12118.85478,W,0.117,,180315,,,A*76\r\n" +
		"\xb5\x62\x01\x07\x00\x00\x08\x19" + // a UBX frame between sentences
		"$GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,*44\r\n"
	d := nmea.NewDecoder(strings.NewReader(capture))
	for {
		fix, err := d.Next()
		if err != nil {
			break
		}
		fmt.Println(fix)
	}
	fmt.Println(d.Stats().NoiseBytes, "noise bytes skipped")
	// Output:
	// 2015-03-18T17:19:26.000Z 3D 44.069010,-121.314246 alt 1147.2m 0.06m/s hdop 0.91 sats 12
	// 8 noise bytes skipped
}
