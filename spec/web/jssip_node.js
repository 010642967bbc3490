// jssip_node.js URL USER PASSWORD DOMAIN TO TEXT: JsSIP in Node (npm jssip, with the `ws`
// package as its WebSocket) registers with digest at URL, sends TEXT to TO and waits for a
// MESSAGE back (no TO: only waits for one). Prints one JSON line per event; exits 0 once it
// got a MESSAGE (EXIT_ON_SENT: once its own was answered 2xx), 1 on failure or after 10 s.
// NODE_EXTRA_CA_CERTS trusts a test CA for wss:. Used by spec/ws_peers_spec.lua.
'use strict';
const path = require('path');
const mods = process.env.NODE_MODULES || path.join(__dirname, '../../build/web/node_modules');
const JsSIP = require(path.join(mods, 'jssip'));
const WebSocket = require(path.join(mods, 'ws'));
global.WebSocket = WebSocket;   // what JsSIP.WebSocketInterface uses
const [url, user, password, domain, to, text] = process.argv.slice(2);
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const ua = new JsSIP.UA({
  sockets: [new JsSIP.WebSocketInterface(url)], uri: `sip:${user}@${domain}`, password,
  register: true, session_timers: false,
});
const done = (code) => { try { ua.stop(); } catch (e) { /* closing */ } setTimeout(() => process.exit(code), 100); };
setTimeout(() => { say({ event: 'timeout' }); done(1); }, 10000);
ua.on('registered', () => {
  say({ event: 'registered' });
  if (to) ua.sendMessage(to, text, { eventHandlers: {
    succeeded: (e) => { say({ event: 'sent', status: e.response.status_code }); if (process.env.EXIT_ON_SENT) done(0); },
    failed: (e) => { say({ event: 'send failed', cause: e.cause, status: e.response && e.response.status_code, reason: e.response && e.response.reason_phrase }); done(1); },
  } });
});
ua.on('registrationFailed', (e) => { say({ event: 'registration failed', cause: e.cause }); done(1); });
ua.on('newMessage', (e) => {
  if (e.originator !== 'remote') return;
  say({ event: 'message', from: e.request.from.uri.toString(), body: e.request.body,
        via: e.request.getHeader('Via') });
  if (!process.env.STAY) done(0);
});
ua.start();
