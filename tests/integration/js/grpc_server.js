// The local service of test_grpc_js.py: grpcjs.test.Echo (grpc_echo.proto) served by @grpc/grpc-js
// over h2c on 127.0.0.1:PORT, and grpc.health.v1.Health/Check answering SERVING (for a member
// sidecar's --health-check grpc). Each event the test looks for (a call started, cancelled by
// the caller, ended) is one JSON line on stdout.
// Usage: node grpc_server.js PORT [SERVER_OPTIONS_JSON]  (grpc.Server's options, added to ours)
'use strict';
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const port = process.argv[2];
const def = protoLoader.loadSync(path.join(__dirname, 'grpc_echo.proto'),
                                 {keepCase: true, longs: Number, defaults: true});
const Echo = grpc.loadPackageDefinition(def).grpcjs.test.Echo;

function log(event, method, call, extra) {
  const tag = call && call.request ? call.request.tag : undefined;
  console.log(JSON.stringify({event, method, tag, ...extra}));  // extra's tag wins
}

// grpc-js emits 'cancelled' when a call's stream closes, answered or not: only a call the handler
// had not finished yet was cancelled from the other side.
function watchCancel(method, call, tag, extra) {
  call.on('cancelled', () => {
    if (!call.finished) {
      console.log(JSON.stringify({event: 'cancelled', method, tag, ...extra()}));
    }
  });
}

const handlers = {
  Unary(call, callback) {
    const req = call.request;
    // The caller's identity as the sidecar passed it on.
    const xfcc = call.metadata.get('x-forwarded-client-cert')[0];
    log('started', 'Unary', call, {bytes: req.data.length, xfcc: xfcc && String(xfcc)});
    watchCancel('Unary', call, req.tag, () => ({}));
    const answer = () => {
      if (call.cancelled) {
        return;
      }
      call.finished = true;
      if (req.fail_code) {
        const trailers = new grpc.Metadata();
        trailers.set('x-echo-reason', 'asked-to-fail');
        trailers.set('x-echo-detail-bin', Buffer.from([0, 1, 2, 0xfe, 0xff]));
        callback({code: req.fail_code, details: req.fail_message, metadata: trailers});
        return;
      }
      callback(null, {data: req.data, tag: req.tag});
    };
    if (req.delay_ms) {
      setTimeout(answer, req.delay_ms);
    } else {
      answer();
    }
  },
  ClientStream(call, callback) {
    const parts = [];
    let answered = false;
    call.on('data', (m) => {
      if (answered) {
        return;
      }
      if (m.fail_code) {  // answered before the request ends, as a server may (RFC 9113 8.1)
        answered = true;
        log('answered-early', 'ClientStream', null, {tag: m.tag, read: parts.length});
        callback({code: m.fail_code, details: m.fail_message});
        return;
      }
      parts.push(m.data);
    });
    call.on('end', () => {
      if (!answered) {
        callback(null, {data: Buffer.concat(parts), count: parts.length});
      }
    });
  },
  ServerStream(call) {
    const req = call.request;
    let sent = 0;
    log('started', 'ServerStream', call, {count: req.count});
    watchCancel('ServerStream', call, req.tag, () => ({sent}));
    const next = () => {
      if (call.cancelled) {
        return;
      }
      if (sent === req.count) {
        log('ended', 'ServerStream', call, {sent});
        call.finished = true;
        call.end();
        return;
      }
      call.write({data: req.data.length ? req.data : Buffer.from(String(sent)), tag: req.tag});
      sent++;
      setTimeout(next, req.delay_ms);
    };
    next();
  },
  Bidi(call) {
    call.on('data', (m) => call.write({data: Buffer.from(m.data.toString().toUpperCase()),
                                       tag: m.tag}));
    call.on('end', () => call.end());
  },
};

const server = new grpc.Server({'grpc.max_receive_message_length': 64 << 20,
                                'grpc.max_send_message_length': 64 << 20,
                                ...JSON.parse(process.argv[3] || '{}')});
server.addService(Echo.service, handlers);
// The health protocol by hand: HealthCheckRequest is not read, HealthCheckResponse{status: SERVING}
// is the two bytes 08 01.
const raw = {serialize: (b) => b, deserialize: (b) => b};
server.addService({Check: {path: '/grpc.health.v1.Health/Check', requestStream: false,
                           responseStream: false, requestSerialize: raw.serialize,
                           requestDeserialize: raw.deserialize, responseSerialize: raw.serialize,
                           responseDeserialize: raw.deserialize}},
                  {Check: (call, callback) => callback(null, Buffer.from([0x08, 0x01]))});
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) {
    console.error(`bind 127.0.0.1:${port}: ${err.message}`);  // EADDRINUSE: the harness retries
    process.exit(1);
  }
  console.log(JSON.stringify({event: 'listening', port: Number(port)}));
});
process.on('SIGTERM', () => server.tryShutdown(() => process.exit(0)));
