package pki_test

import (
	"crypto/x509"
	"fmt"

	"github.com/coldchain/tracker/provisioning/pki"
)

func ExampleCA_IssueDevice() {
	ca, err := pki.NewMemoryCA(pki.CAOptions{CN: "Example Root", Intermediate: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	dev, err := ca.IssueDevice("container-0001", pki.DeviceOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("subject:", dev.Leaf.Subject.CommonName)
	fmt.Println("issuer:", dev.Leaf.Issuer.CommonName)
	fmt.Println("certificates sent in TLS:", len(dev.TLSCertificate().Certificate))
	fmt.Println("verify:", pki.Verify(dev.Chain, []*x509.Certificate{ca.Root}, dev.Leaf.NotBefore.Add(pki.Backdate)))

	_, err = ca.IssueDevice("container 2", pki.DeviceOptions{})
	fmt.Println(err)
	// Output:
	// subject: container-0001
	// issuer: Example Root Intermediate
	// certificates sent in TLS: 2
	// verify: <nil>
	// pki: invalid registration id "container 2": character ' ' at offset 9 is not allowed; use letters, digits, '-', '.', '_' or ':'
}
