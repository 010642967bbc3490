// chat_browser.js URL SCREENSHOT: headless Chromium (Debian's, driven by npm playwright-core)
// opens the chat page at URL twice, as alice and as bob (password "secret"): alice messages
// bob, who must see it in #messages; alice messages the echo bot (the page's default To) and
// must see its echo. Saves a screenshot of alice's page. Prints JSON lines; exits 0 on success.
'use strict';
const path = require('path');
const mods = process.env.NODE_MODULES || path.join(__dirname, '../../build/web/node_modules');
const { chromium } = require(path.join(mods, 'playwright-core'));
const [url, shot] = process.argv.slice(2);
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');

(async () => {
  const userDir = require('fs').mkdtempSync(path.join(require('os').tmpdir(), 'luasip-chromium-'));
  const ctx = await chromium.launchPersistentContext(userDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, timeout: 20000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run',
      '--disable-component-update', '--disable-sync'],
  });
  const timer = setTimeout(() => { say({ event: 'timeout' }); process.exit(1); }, 40000);
  try {
    const login = async (user) => {
      const page = await ctx.newPage();
      page.on('pageerror', (e) => say({ event: 'page error', user, error: String(e) }));
      await page.goto(url);
      await page.fill('#user', user);
      await page.fill('#password', 'secret');
      await page.click('#login');
      await page.waitForFunction(() => document.querySelector('#status').textContent === 'registered',
        null, { timeout: 10000 });
      say({ event: 'registered', user });
      return page;
    };
    const alice = await login('alice');
    const bob = await login('bob');
    const send = async (page, to, text) => {
      await page.bringToFront();
      await page.fill('#to', to);
      await page.fill('#text', text);
      await page.click('#send');
    };
    const seen = (page, who, text) => page.waitForFunction(([w, t]) =>
      Array.from(document.querySelectorAll('#messages li.received')).some(
        (li) => li.textContent.includes(w) && li.textContent.includes(t)), [who, text], { timeout: 10000 });
    const echoTo = await alice.inputValue('#to');
    say({ event: 'default to', to: echoTo });
    await send(alice, 'bob@localhost', 'hello bob, from a browser');
    await seen(bob, 'alice@localhost', 'hello bob, from a browser');
    say({ event: 'bob got it' });
    await send(bob, 'alice', 'hi alice');
    await seen(alice, 'bob@localhost', 'hi alice');
    say({ event: 'alice got it' });
    await send(alice, echoTo, 'ping the bot');
    await seen(alice, 'echo@', 'ping the bot');
    say({ event: 'echo seen' });
    const items = await alice.$$eval('#messages li', (l) => l.map((li) => li.textContent));
    say({ event: 'alice messages', items });
    if (shot) await alice.screenshot({ path: shot });
    clearTimeout(timer);
    await ctx.close();
    process.exit(0);
  } catch (e) {
    say({ event: 'failed', error: String(e) });
    process.exit(1);
  }
})();
