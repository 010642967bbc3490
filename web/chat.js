// chat.js: the chat page's user agent. JsSIP registers with digest over a WebSocket to the
// server the page came from, sends MESSAGEs and lists what is sent and received.
(function () {
  'use strict';
  var domain = (window.LUASIP && window.LUASIP.domain) || location.hostname;
  var $ = function (id) { return document.getElementById(id); };
  var ua = null;

  $('to').value = 'echo@' + domain;

  function status(s) { $('status').textContent = s; }

  function show(kind, who, text) {
    var li = document.createElement('li');
    var w = document.createElement('span');
    li.className = kind;
    w.className = 'who';
    w.textContent = who;
    li.appendChild(w);
    li.appendChild(document.createTextNode(text));
    $('messages').appendChild(li);
  }

  function aor(s) {
    s = s.trim();
    if (!/^sips?:/.test(s)) s = 'sip:' + s;
    if (s.indexOf('@') < 0) s = s + '@' + domain;
    return s;
  }

  $('login-form').addEventListener('submit', function (e) {
    e.preventDefault();
    if (ua) ua.stop();
    var user = $('user').value.trim();
    var ws = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/';
    var socket = new JsSIP.WebSocketInterface(ws);
    ua = new JsSIP.UA({
      sockets: [socket],
      uri: 'sip:' + user + '@' + domain,
      password: $('password').value,
      register: true,
      session_timers: false
    });
    ua.on('connecting', function () { status('connecting'); });
    ua.on('disconnected', function () { status('disconnected'); });
    ua.on('registered', function () { status('registered'); });
    ua.on('unregistered', function () { status('unregistered'); });
    ua.on('registrationFailed', function (ev) { status('registration failed: ' + ev.cause); });
    ua.on('newMessage', function (ev) {
      if (ev.originator !== 'remote') return;
      show('received', ev.request.from.uri.toAor().replace(/^sip:/, ''), ev.request.body);
    });
    status('connecting');
    ua.start();
  });

  $('send-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var text = $('text').value;
    var to = aor($('to').value);
    if (!ua || !text) return;
    show('sent', 'me → ' + to.replace(/^sip:/, ''), text);
    $('text').value = '';
    ua.sendMessage(to, text, {
      eventHandlers: {
        failed: function (ev) { show('error', 'not sent', ev.cause); }
      }
    });
  });
})();
