// Conformance run of the official Azure IoT Node.js SDKs against the tracker
// emulator. The Go test emulator/conformance_test.go starts the emulator,
// issues the device certificates with trackerctl pki and runs this script
// with a JSON configuration in CONFORMANCE_CONFIG. The script prints one JSON
// object with what every step observed; the Go test asserts on it and on the
// emulator's own records. Every step is bounded by a timeout.
'use strict';

const fs = require('fs');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Mqtt: DpsMqtt } = require('azure-iot-provisioning-device-mqtt');
const { X509Security } = require('azure-iot-security-x509');
const { Client: DeviceClient, Message } = require('azure-iot-device');
const { Mqtt: HubMqtt } = require('azure-iot-device-mqtt');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { NoRetry } = require('azure-iot-common');

const cfg = JSON.parse(process.env.CONFORMANCE_CONFIG);
const STEP_MS = 30000;
const out = { steps: [] };

function bounded(name, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`step "${name}" timed out after ${STEP_MS} ms`)), STEP_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function step(name, fn) {
  try {
    const result = await bounded(name, fn());
    out[name] = result === undefined ? {} : result;
    out.steps.push(name);
  } catch (err) {
    out.failed = name;
    out.error = `${err && err.constructor && err.constructor.name}: ${err && err.message}`;
    throw err;
  }
}

function errInfo(err) {
  return { name: err && err.constructor ? err.constructor.name : String(err), message: err && err.message ? err.message : String(err) };
}

function register(dev) {
  const security = new X509Security(dev.id, { cert: fs.readFileSync(dev.chain, 'utf8'), key: fs.readFileSync(dev.key, 'utf8') });
  const client = ProvisioningDeviceClient.create(cfg.provisioningHost, cfg.idScope, new DpsMqtt(), security);
  return client.register();
}

function hubClient(dev, assignedHub, deviceId) {
  const client = DeviceClient.fromConnectionString(`HostName=${assignedHub};DeviceId=${deviceId};x509=true`, HubMqtt);
  client.setOptions({ cert: fs.readFileSync(dev.chain, 'utf8'), key: fs.readFileSync(dev.key, 'utf8') });
  client.setRetryPolicy(new NoRetry());
  return client;
}

function waitFor(emitter, event, pred) {
  return new Promise((resolve) => {
    const on = (...args) => {
      if (!pred || pred(...args)) {
        emitter.removeListener(event, on);
        resolve(args[0]);
      }
    };
    emitter.on(event, on);
  });
}

async function main() {
  const dps = ProvisioningServiceClient.fromConnectionString(cfg.dpsConnectionString);
  const registry = Registry.fromConnectionString(cfg.hubConnectionString);
  const service = ServiceClient.fromConnectionString(cfg.hubConnectionString);
  const dev = cfg.device;
  let client;
  let reg;

  await step('group', async () => {
    const res = await dps.createOrUpdateEnrollmentGroup({
      enrollmentGroupId: cfg.groupId,
      attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: fs.readFileSync(cfg.caCert, 'utf8') } } } },
      provisioningStatus: 'enabled',
    });
    const got = await dps.getEnrollmentGroup(cfg.groupId);
    return { etag: res.responseBody.etag, status: got.responseBody.provisioningStatus };
  });

  await step('registration', async () => {
    reg = await register(dev);
    return { assignedHub: reg.assignedHub, deviceId: reg.deviceId, status: reg.status, substatus: reg.substatus };
  });

  await step('connect', async () => {
    client = hubClient(dev, reg.assignedHub, reg.deviceId);
    await client.open();
    return {};
  });

  await step('telemetry', async () => {
    const msg = new Message(JSON.stringify({ temp: 4.2, seq: 1 }));
    msg.messageId = 'conf-1';
    msg.contentType = 'application/json';
    msg.contentEncoding = 'utf-8';
    msg.properties.add('shipment', 'S 42');
    msg.properties.add('alert&level', 'a=b');
    await client.sendEvent(msg);
    return { messageId: msg.messageId };
  });

  await step('twin', async () => {
    const twin = await client.getTwin();
    await new Promise((resolve, reject) => twin.properties.reported.update({ firmware: '1.0.0', sensors: { temp: true } }, (err) => err ? reject(err) : resolve()));
    const desired = waitFor(twin, 'properties.desired', (d) => d && d.interval === 15);
    const current = await registry.getTwin(reg.deviceId);
    await registry.updateTwin(reg.deviceId, { properties: { desired: { interval: 15 } } }, current.responseBody.etag);
    const d = await desired;
    const after = await registry.getTwin(reg.deviceId);
    return {
      desiredInterval: d.interval, desiredVersion: d.$version,
      reportedFirmware: after.responseBody.properties.reported.firmware,
      reportedVersion: after.responseBody.properties.reported.$version,
    };
  });

  await step('method', async () => {
    client.onDeviceMethod('status', (req, res) => {
      res.send(200, { ok: true, echo: req.payload }, () => {});
    });
    const result = await new Promise((resolve, reject) => {
      service.invokeDeviceMethod(reg.deviceId, { methodName: 'status', payload: { ping: 1 }, responseTimeoutInSeconds: 15 }, (err, r) => err ? reject(err) : resolve(r));
    });
    return { status: result.status, payload: result.payload };
  });

  await step('disabled', async () => {
    await dps.createOrUpdateIndividualEnrollment({
      registrationId: dev.id,
      attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: fs.readFileSync(dev.cert, 'utf8') } } } },
      provisioningStatus: 'disabled',
    });
    let error = null;
    try {
      await register(dev);
    } catch (err) {
      error = errInfo(err);
    }
    const state = await dps.getDeviceRegistrationState(dev.id);
    return { error, registrationStatus: state.responseBody.status };
  });

  await step('deleted', async () => {
    const disconnected = waitFor(client, 'disconnect');
    const before = await registry.get(reg.deviceId);
    await registry.delete(reg.deviceId);
    await disconnected;
    let reconnectError = null;
    const again = hubClient(dev, reg.assignedHub, reg.deviceId);
    try {
      await again.open();
      await again.close();
    } catch (err) {
      reconnectError = errInfo(err);
    }
    let getError = null;
    try {
      await registry.get(reg.deviceId);
    } catch (err) {
      getError = errInfo(err);
    }
    return { authType: before.responseBody.authentication.type, disconnected: true, reconnectError, getError };
  });

  await client.close().catch(() => {});
}

main()
  .then(() => { out.ok = true; })
  .catch(() => { out.ok = false; })
  .finally(() => {
    process.stdout.write(JSON.stringify(out) + '\n');
    // The SDKs keep sockets and timers alive; the run is over.
    process.exit(out.ok ? 0 : 1);
  });
