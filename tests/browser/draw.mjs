// Draws a "1" and a "7" with mouse strokes on the page of `digits serve` in a real browser
// (Debian's chromium, driven by playwright-core) and prints what the page answered, as JSON.
// Usage: node tests/browser/draw.mjs URL SCREENSHOT_DIR
import { chromium } from 'playwright-core';

const [url, screenshots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 600 } });
  await page.goto(url);
  const box = await page.locator('#pad').boundingBox();
  const at = (x, y) => [box.x + x * box.width, box.y + y * box.height];

  async function draw(strokes) {
    for (const stroke of strokes) {
      await page.mouse.move(...at(...stroke[0]));
      await page.mouse.down();
      for (const point of stroke.slice(1)) {
        await page.mouse.move(...at(...point), { steps: 12 });
      }
      await page.mouse.up();
    }
  }

  async function answerAfter(strokes, name) {
    await page.click('#clear');
    await draw(strokes);
    await page.waitForFunction(() => document.querySelector('#answer').textContent !== '', null, { timeout: 10000 });
    // A later answer may replace an earlier one while requests settle.
    await page.waitForTimeout(400);
    await page.screenshot({ path: `${screenshots}/${name}.png` });
    return page.locator('#answer').textContent();
  }

  const one = await answerAfter([[[0.5, 0.15], [0.5, 0.85]]], 'one');
  const seven = await answerAfter([[[0.25, 0.2], [0.75, 0.2], [0.42, 0.85]]], 'seven');
  console.log(JSON.stringify({ one, seven }));
} finally {
  await browser.close();
}
