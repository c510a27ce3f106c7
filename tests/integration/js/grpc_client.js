// The caller of test_grpc_js.py: @grpc/grpc-js calling grpcjs.test.Echo (grpc_echo.proto) on one
// channel, step after step, and printing what came back as one JSON line.
// Usage: node grpc_client.js CONFIG_JSON
//   CONFIG: {target: "127.0.0.1:PORT",
//            certs: DIR (mTLS with DIR/ca.pem, client.pem, client.key) or absent (h2c),
//            authority: the channel's :authority (grpc.default_authority), optional,
//            steps: [STEP...]}
//   STEP: {call: "Unary"|"ClientStream"|"ServerStream"|"Bidi",
//          msg: MSG (Unary, ServerStream) | msgs: [MSG...] (ClientStream, Bidi),
//          deadline_ms, cancel_after (ServerStream: cancel once that many replies came),
//          busy_ms (block this process's event loop from 200 ms after the call's start until
//                   busy_ms after it: its own deadline timer cannot fire meanwhile)}
//   or {parallel: [STEP...]}: those steps at once on the channel, their results as a list.
//   MSG: Msg's fields; data is a string, or {size: N} for N random bytes, {size: N, fill: C}
//        for N times the character C.
//   Result per step: {code, details, trailers, replies: [{len, sha256, text, count, tag, at_ms}],
//                     sent: [{len, sha256}], elapsed_ms}; code 0 is success.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const config = JSON.parse(process.argv[2]);
const def = protoLoader.loadSync(path.join(__dirname, 'grpc_echo.proto'),
                                 {keepCase: true, longs: Number, defaults: true});
const Echo = grpc.loadPackageDefinition(def).grpcjs.test.Echo;

const options = {'grpc.max_receive_message_length': 64 << 20,
                 'grpc.max_send_message_length': 64 << 20};
let creds = grpc.credentials.createInsecure();
if (config.certs) {
  const read = (name) => fs.readFileSync(path.join(config.certs, name));
  creds = grpc.credentials.createSsl(read('ca.pem'), read('client.key'), read('client.pem'));
  options['grpc.ssl_target_name_override'] = 'localhost';  // the sidecar's certificate names it
}
if (config.authority) {
  options['grpc.default_authority'] = config.authority;
}
const client = new Echo(config.target, creds, options);

const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

function message(spec) {
  const m = {...spec};
  if (m.data && typeof m.data === 'object') {
    m.data = m.data.fill ? Buffer.alloc(m.data.size, m.data.fill) : crypto.randomBytes(m.data.size);
  } else {
    m.data = Buffer.from(m.data || '');
  }
  return m;
}

function describe(m, start) {
  return {len: m.data.length, sha256: sha(m.data),
          text: m.data.length <= 200 ? m.data.toString() : undefined, count: m.count, tag: m.tag,
          at_ms: Date.now() - start};
}

function trailersOf(md) {
  const out = {};
  for (const [k, v] of Object.entries(md ? md.getMap() : {})) {
    out[k] = Buffer.isBuffer(v) ? v.toString('base64') : v;
  }
  return out;
}

function busy(step, start) {
  if (step.busy_ms) {
    setTimeout(() => {
      while (Date.now() - start < step.busy_ms) { /* the event loop is held */ }
    }, 200);
  }
}

function run(step) {
  if (step.parallel) {
    return Promise.all(step.parallel.map(run));
  }
  return new Promise((resolve) => {
    const start = Date.now();
    const result = {call: step.call, replies: [], sent: []};
    const callOptions = step.deadline_ms ? {deadline: start + step.deadline_ms} : {};
    const done = (err, reply) => {
      if (result.code !== undefined) {
        return;
      }
      if (reply) {
        result.replies.push(describe(reply, start));
      }
      result.code = err ? err.code : 0;
      result.details = err ? err.details : '';
      result.elapsed_ms = Date.now() - start;
      resolve(result);
    };
    const record = (m) => {
      result.sent.push({len: m.data.length, sha256: sha(m.data)});
      return m;
    };
    let call;
    switch (step.call) {
      case 'Unary':
        call = client.Unary(record(message(step.msg)), new grpc.Metadata(), callOptions, done);
        break;
      case 'ClientStream':
        call = client.ClientStream(new grpc.Metadata(), callOptions, done);
        for (const m of step.msgs) {
          call.write(record(message(m)));
        }
        call.end();
        break;
      case 'ServerStream':
        call = client.ServerStream(record(message(step.msg)), new grpc.Metadata(), callOptions);
        call.on('data', (m) => {
          result.replies.push(describe(m, start));
          if (step.cancel_after && result.replies.length === step.cancel_after) {
            call.cancel();
          }
        });
        call.on('error', (e) => done(e));
        call.on('status', (s) => {
          result.trailers = trailersOf(s.metadata);
          if (s.code === 0) {
            done(null);
          }
        });
        break;
      case 'Bidi': {
        // Ping-pong: each message is written only once the answer to the one before came, so
        // nothing passes unless the sidecar streams both ways at once.
        call = client.Bidi(new grpc.Metadata(), callOptions);
        const msgs = step.msgs.map(message);
        const writeNext = () => {
          if (result.sent.length < msgs.length) {
            call.write(record(msgs[result.sent.length]));
          } else {
            call.end();
          }
        };
        call.on('data', (m) => {
          result.replies.push(describe(m, start));
          writeNext();
        });
        call.on('error', (e) => done(e));
        call.on('status', (s) => {
          result.trailers = trailersOf(s.metadata);
          if (s.code === 0) {
            done(null);
          }
        });
        writeNext();
        break;
      }
      default:
        throw new Error(`no such call ${step.call}`);
    }
    call.on('status', (s) => {
      result.trailers = trailersOf(s.metadata);
    });
    busy(step, start);
  });
}

(async () => {
  const results = [];
  for (const step of config.steps) {
    results.push(await run(step));
  }
  client.close();
  console.log(JSON.stringify(results));
})().catch((e) => {
  console.error(e && e.stack || String(e));
  process.exit(1);
});
