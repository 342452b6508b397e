// Drives the terminal in headless Chromium as people would: a clerk logs in, sends a
// transmission with an error and then the fixed one (files OUT_DIR/setai.csv, kojin-bad.csv,
// kojin.csv), opens the candidate list and the first candidate, sends a 確定指示; the
// 国保連合会's operator logs in with their own token and confirms from the console; the
// clerk sees the results, prints the 継続世帯確定リスト to PDF and acknowledges the 要確認
// candidate's 空白期間; last, the disclosure record of 山田 太郎 (個人番号 read from stdin).
// Screenshots of each page; one JSON line per step.
//
// usage: node terminal.cjs BASE_URL TOKEN OUT_DIR OPERATOR_TOKEN   (playwright-core from NODE_PATH)
const { chromium } = require('playwright-core');

(async () => {
const [base, token, out, operator] = process.argv.slice(2);
const say = (step, data) => console.log(JSON.stringify({ step, ...data }));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});
try {
  const page = await (await browser.newContext({ locale: 'ja-JP', viewport: { width: 1366, height: 900 } })).newPage();
  await page.goto(`${base}/terminal/login`);
  // Keyboard only: type into the token field (it has autofocus), Enter submits.
  await page.focus('#token');
  await page.keyboard.type(token);
  await Promise.all([page.waitForURL('**/terminal/candidates'), page.keyboard.press('Enter')]);
  // Flow 5: send a pair with an error, read the 処理結果, send the fixed pair.
  const upload = async (kojin) => {
    await page.goto(`${base}/terminal/transmissions/new`);
    await page.setInputFiles('#setai_file', `${out}/setai.csv`);
    await page.setInputFiles('#kojin_file', `${out}/${kojin}`);
    await page.selectOption('#encoding', 'utf-8');
    await page.click('button[type=submit]:has-text("送信")');
    await page.waitForLoadState();
  };
  await upload('kojin-bad.csv');
  await page.screenshot({ path: `${out}/0a-refused.png`, fullPage: true });
  say('refused', { text: await page.textContent('main') });
  await upload('kojin.csv');
  await page.waitForURL(/accepted=/);
  await page.screenshot({ path: `${out}/0b-transmissions.png`, fullPage: true });
  say('accepted', { text: await page.textContent('main') });
  // The caller lets the intermediate replicate and cosign, then writes a line; the next
  // line is the 個人番号 for the disclosure step (stdin only, never an argument).
  const { createInterface } = require('node:readline');
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  await lines.next();
  await page.goto(`${base}/terminal/transmissions`);
  await page.screenshot({ path: `${out}/0c-forwarded.png`, fullPage: true });
  say('forwarded', { text: await page.textContent('main') });
  await page.goto(`${base}/terminal/candidates`);
  await page.screenshot({ path: `${out}/1-candidates.png`, fullPage: true });
  say('list', { text: await page.textContent('main') });
  await page.click('main table tbody tr:first-child a');
  await page.waitForURL(/\/terminal\/candidates\/\d+$/);
  say('detail', { text: await page.textContent('main') });
  await page.check('input[name=decision][value=continue]');
  await page.fill('#reason', '世帯主同一を確認');
  await page.screenshot({ path: `${out}/2-decision.png`, fullPage: true });
  await page.click('button[type=submit]:has-text("確定指示を送信")');
  await page.waitForURL(/done=\d+/);
  say('decided', { text: await page.textContent('main') });
  // The 国保連合会's operator confirms from the console (4-③④), in a browser of their own.
  const ops = await (await browser.newContext({ locale: 'ja-JP', viewport: { width: 1366, height: 900 } })).newPage();
  await ops.goto(`${base}/terminal/login`);
  await ops.fill('#token', operator);
  await Promise.all([ops.waitForURL('**/terminal/console'), ops.keyboard.press('Enter')]);
  await ops.screenshot({ path: `${out}/7-console.png`, fullPage: true });
  say('console', { text: await ops.textContent('main') });
  await ops.click('button[type=submit]:has-text("確定処理を実行")');
  await ops.waitForURL('**/terminal/console/confirm');
  await ops.screenshot({ path: `${out}/8-confirmed.png`, fullPage: true });
  say('confirmed', { text: await ops.textContent('main') });
  await page.goto(`${base}/terminal/results`);
  await page.screenshot({ path: `${out}/3-results.png`, fullPage: true });
  say('results', { text: await page.textContent('main') });
  await page.goto(`${base}/terminal/results/print`);
  await page.emulateMedia({ media: 'print' });
  await page.screenshot({ path: `${out}/4-print.png`, fullPage: true });
  await page.pdf({ path: `${out}/keizoku-list.pdf`, format: 'A4', landscape: true, printBackground: true, preferCSSPageSize: true });
  say('printed', { text: await page.textContent('main') });
  // The 要確認 candidate (a 空白期間): record what was found, apart from the 確定指示.
  await page.emulateMedia({ media: 'screen' });
  await page.goto(`${base}/terminal/candidates?state=anomalies`);
  await page.click('main table tbody tr:first-child a');
  await page.waitForURL(/\/terminal\/candidates\/\d+$/);
  await page.fill('#note', '転入届の遅れ。空白期間に他の保険の加入なしを確認');
  await page.screenshot({ path: `${out}/5-anomaly.png`, fullPage: true });
  await page.click('button[type=submit]:has-text("確認済にする")');
  await page.waitForURL(/acknowledged=\d+/);
  await page.screenshot({ path: `${out}/6-acknowledged.png`, fullPage: true });
  say('acknowledged', { text: await page.textContent('main') });
  // The remaining candidate (佐藤, acknowledged above) by the bulk 確定指示: select, review,
  // register.
  await page.goto(`${base}/terminal/candidates?state=undecided`);
  await page.check('main table tbody tr:first-child input[type=checkbox]');
  await page.check('input[name=decision][value=continue]');
  await page.click('button[type=submit]:has-text("確認へ進む")');
  await page.waitForLoadState();
  await page.screenshot({ path: `${out}/6b-bulk-review.png`, fullPage: true });
  say('bulk_review', { text: await page.textContent('main') });
  await page.click('button[type=submit]:has-text("確定指示を登録")');
  await page.waitForURL(/bulk=\d+/);
  say('bulk_done', { text: await page.textContent('main') });
  // 本人開示 for 山田 太郎: the 個人番号 comes on stdin (never an argument), typed into the form.
  const kojin = ((await lines.next()).value || '').trim();
  process.stdin.destroy();
  await page.goto(`${base}/terminal/disclosure`);
  await page.fill('#kojin_no', kojin);
  await page.click('button[type=submit]:has-text("開示記録を作成")');
  await page.waitForLoadState();
  await page.screenshot({ path: `${out}/9-disclosure.png`, fullPage: true });
  say('disclosure', { text: await page.textContent('main') });
} catch (e) {
  // Say where it stopped, for the test's failure message.
  const pages = browser.contexts().flatMap((c) => c.pages());
  for (const p of pages) console.error(`at ${p.url()}: ${(await p.textContent('body').catch(() => '')) || ''}`);
  throw e;
} finally {
  await browser.close();
}
})().catch((e) => { console.error(e); process.exit(1); });
