// Drain benchmark client: the official Azure IoT Node.js device SDK
// (azure-iot-device-mqtt) sends a backlog of telemetry records to the
// tracker emulator, one record per message and one sendEvent at a time, as
// the SDK's samples do. The Go benchmark agent/drain_bench_test.go
// (BenchmarkBacklogDrain, run by .ci/bench.d/10-drain) issues the device
// certificate, writes the records and runs this script with a JSON
// configuration in BENCH_DRAIN_CONFIG:
//
//   { "provisioningHost": "host:port", "idScope": "...",
//     "device": { "id": "...", "chain": "chain.pem", "key": "key.pem" },
//     "records": "records.json" }
//
// records.json is a JSON array of message bodies (objects). The script
// provisions the device through DPS, connects to the assigned hub, sends
// every body and prints one JSON line: how many were sent and how long the
// sends took. Every wait is bounded.
'use strict';

const fs = require('fs');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Mqtt: DpsMqtt } = require('azure-iot-provisioning-device-mqtt');
const { X509Security } = require('azure-iot-security-x509');
const { Client: DeviceClient, Message } = require('azure-iot-device');
const { Mqtt: HubMqtt } = require('azure-iot-device-mqtt');
const { NoRetry } = require('azure-iot-common');

const cfg = JSON.parse(process.env.BENCH_DRAIN_CONFIG);
const LIMIT_MS = 10 * 60 * 1000;

function bounded(what, promise, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function main() {
  const dev = cfg.device;
  const cert = fs.readFileSync(dev.chain, 'utf8');
  const key = fs.readFileSync(dev.key, 'utf8');
  const bodies = JSON.parse(fs.readFileSync(cfg.records, 'utf8'));

  const security = new X509Security(dev.id, { cert, key });
  const prov = ProvisioningDeviceClient.create(cfg.provisioningHost, cfg.idScope, new DpsMqtt(), security);
  const reg = await bounded('DPS registration', prov.register(), 60000);

  const client = DeviceClient.fromConnectionString(`HostName=${reg.assignedHub};DeviceId=${reg.deviceId};x509=true`, HubMqtt);
  client.setOptions({ cert, key });
  client.setRetryPolicy(new NoRetry());
  await bounded('hub connect', client.open(), 60000);

  const start = process.hrtime.bigint();
  const send = async () => {
    for (const body of bodies) {
      const msg = new Message(JSON.stringify(body));
      msg.messageId = `${dev.id}-${body.records[0].seq}`;
      msg.contentType = 'application/json';
      msg.contentEncoding = 'utf-8';
      await client.sendEvent(msg);
    }
  };
  await bounded('sending', send(), LIMIT_MS);
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  await client.close();
  process.stdout.write(JSON.stringify({ sent: bodies.length, ms }) + '\n');
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ error: `${err && err.constructor && err.constructor.name}: ${err && err.message}` }) + '\n');
  process.exit(1);
});
