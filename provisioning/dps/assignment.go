package dps

import (
	"time"

	"github.com/coldchain/tracker/provisioning/identity"
)

// Assignment converts the result into what the identity store caches,
// stamped with at, the device's best-known time of the assignment.
func (r *Result) Assignment(at time.Time) *identity.Assignment {
	return &identity.Assignment{
		AssignedHub:    r.AssignedHub,
		DeviceID:       r.DeviceID,
		RegistrationID: r.RegistrationID,
		Substatus:      r.Substatus,
		OperationID:    r.OperationID,
		ETag:           r.ETag,
		AssignedAt:     at,
		Result:         r.RegistrationState,
	}
}
