// The fleet as the official Azure IoT Node.js service SDKs see it: enrollment
// groups, individual enrollments, the registration records of a group
// (azure-iot-provisioning-service) and the hub's device registry
// (azure-iothub). Run by emulator/fleetview_test.go with a JSON configuration
// in FLEETVIEW_CONFIG; prints one JSON object.
'use strict';

const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { Registry } = require('azure-iothub');

const cfg = JSON.parse(process.env.FLEETVIEW_CONFIG);

async function all(query) {
  const items = [];
  for (let pages = 0; query.hasMoreResults; pages++) {
    if (pages === 100) throw new Error('more than 100 pages: the continuation never ends');
    const page = await query.next(query.continuationToken);
    items.push(...page.responseBody);
  }
  return items;
}

async function main() {
  const dps = ProvisioningServiceClient.fromConnectionString(cfg.dpsConnectionString);
  const registry = Registry.fromConnectionString(cfg.hubConnectionString);
  const groups = await all(dps.createEnrollmentGroupQuery({ query: '*' }, 10));
  const enrollments = await all(dps.createIndividualEnrollmentQuery({ query: '*' }, 10));
  let registrations = [];
  if (groups.some((g) => g.enrollmentGroupId === cfg.groupId)) {
    registrations = await all(dps.createEnrollmentGroupDeviceRegistrationStateQuery({ query: '*' }, cfg.groupId, 10));
  }
  const devices = (await registry.list()).responseBody;
  return {
    groups: groups.map((g) => ({ id: g.enrollmentGroupId, status: g.provisioningStatus })),
    enrollments: enrollments.map((e) => ({ id: e.registrationId, status: e.provisioningStatus })),
    registrations: registrations.map((r) => ({ id: r.registrationId, status: r.status, hub: r.assignedHub, deviceId: r.deviceId })),
    devices: devices.map((d) => ({ id: d.deviceId, status: d.status, auth: d.authentication && d.authentication.type })),
  };
}

const timer = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, error: 'timed out after 60 s' }));
  process.exit(1);
}, 60000);
main().then(
  (view) => { clearTimeout(timer); console.log(JSON.stringify({ ok: true, ...view })); process.exit(0); },
  (err) => { clearTimeout(timer); console.log(JSON.stringify({ ok: false, error: `${err.constructor.name}: ${err.message}` })); process.exit(1); },
);
