// Uses the page of `digits serve` in a real browser (Debian's chromium, driven by
// playwright-core) as a person would on a laptop and on a phone, and prints what it saw, as
// JSON, for tests/serve.rs to judge: digits drawn with a mouse and with a finger, Esc, an
// error, a photo whose type the browser does not know (uploaded and dropped), the server's
// verdicts, the layout at 1280 and 375 pixels wide, labels, keyboard focus and contrast.
// Usage: node tests/browser/draw.mjs URL SCREENSHOT_DIR PHOTO
import { readFile } from 'node:fs/promises';
import { chromium } from 'playwright-core';

const [url, screenshots, photoPath] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

const ONE = [[[0.5, 0.15], [0.5, 0.85]]];
const SEVEN = [[[0.25, 0.2], [0.75, 0.2], [0.42, 0.85]]];

// Each stroke as points `steps` apart along its segments, in page coordinates.
async function pathsOnPad(page, strokes, steps = 12) {
  const box = await page.locator('#pad').boundingBox();
  return strokes.map(stroke => {
    const points = [stroke[0]];
    for (let i = 1; i < stroke.length; i++) {
      const [[x0, y0], [x1, y1]] = [stroke[i - 1], stroke[i]];
      for (let s = 1; s <= steps; s++) points.push([x0 + (x1 - x0) * s / steps, y0 + (y1 - y0) * s / steps]);
    }
    return points.map(([x, y]) => [box.x + x * box.width, box.y + y * box.height]);
  });
}

async function drawWithMouse(page, strokes) {
  for (const path of await pathsOnPad(page, strokes)) {
    await page.mouse.move(...path[0]);
    await page.mouse.down();
    for (const point of path.slice(1)) await page.mouse.move(...point);
    await page.mouse.up();
  }
}

// Real touch input (touchstart/move/end through the browser's input pipeline, which the
// page receives as pointer events of type "touch").
async function drawWithFinger(page, strokes) {
  const cdp = await page.context().newCDPSession(page);
  const touch = (type, points) => cdp.send('Input.dispatchTouchEvent', {
    type, touchPoints: points.map(([x, y]) => ({ x, y, radiusX: 4, radiusY: 4, force: 1 })),
  });
  for (const path of await pathsOnPad(page, strokes)) {
    await touch('touchStart', [path[0]]);
    for (const point of path.slice(1)) await touch('touchMove', [point]);
    await touch('touchEnd', []);
  }
}

// What the result area shows once an answer is in (a later answer may replace an earlier
// one while requests settle, hence the pause).
async function readout(page) {
  await page.waitForFunction(() => document.querySelector('#answer').textContent !== ''
    || document.querySelector('#error').textContent !== '', null, { timeout: 10000 });
  await page.waitForTimeout(400);
  return page.evaluate(() => {
    const seen = document.querySelector('#seen');
    return {
      answer: document.querySelector('#answer').textContent,
      confidence: document.querySelector('#confidence').textContent,
      bars: [...document.querySelectorAll('#bars li')]
        .map(row => [...row.children].map(cell => cell.textContent).filter(text => text).join(' ')),
      seen: seen.checkVisibility() ? `${seen.naturalWidth}x${seen.naturalHeight}` : null,
      error: document.querySelector('#error').textContent,
    };
  });
}

// Clears the pad the way the hand that draws would press the button, then draws.
async function answerAfter(page, hand, strokes) {
  if (hand === 'finger') {
    await page.tap('#clear');
    await drawWithFinger(page, strokes);
  } else {
    await page.click('#clear');
    await drawWithMouse(page, strokes);
  }
  return readout(page);
}

// Images shown but not loaded: the broken-image icon.
const brokenImages = page => page.evaluate(() => [...document.images]
  .filter(image => image.checkVisibility() && !(image.complete && image.naturalWidth > 0))
  .map(image => image.id));

// Where the pad and the result sit, and whether anything is wider than the window.
const layout = page => page.evaluate(() => {
  const pad = document.querySelector('#pad').getBoundingClientRect();
  const result = document.querySelector('.result').getBoundingClientRect();
  return {
    resultBesidePad: result.left >= pad.right && result.top < pad.bottom,
    resultBelowPad: result.top >= pad.bottom,
    padWidth: Math.round(pad.width),
    resultBottom: Math.round(result.bottom),
    pageWidth: document.documentElement.scrollWidth,
    windowWidth: window.innerWidth,
  };
});

// Text whose contrast with what is behind it is under WCAG AA (4.5:1, or 3:1 for large text).
const lowContrast = page => page.evaluate(() => {
  const rgb = color => color.match(/[\d.]+/g).map(Number);
  const luminance = ([r, g, b]) => [r, g, b]
    .map(c => c / 255).map(c => c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4)
    .reduce((sum, c, i) => sum + c * [0.2126, 0.7152, 0.0722][i], 0);
  const background = element => {
    for (let e = element; e; e = e.parentElement) {
      const color = rgb(getComputedStyle(e).backgroundColor);
      if (color.length < 4 || color[3] > 0) return color;
    }
    return [255, 255, 255];
  };
  const failures = [];
  for (const element of document.body.querySelectorAll('*')) {
    const ownText = [...element.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!ownText || !element.checkVisibility()) continue;
    const style = getComputedStyle(element);
    const [a, b] = [luminance(rgb(style.color)), luminance(background(element))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) failures.push(`${element.tagName}#${element.id} "${element.textContent.trim().slice(0, 30)}": ${ratio.toFixed(2)}`);
  }
  return failures;
});

// The page's content with a margin, without the empty sides of a wide window.
const contentBox = page => page.evaluate(() => {
  const header = document.querySelector('header').getBoundingClientRect();
  const main = document.querySelector('main').getBoundingClientRect();
  return { x: header.left - 24, y: 0, width: header.width + 48, height: main.bottom + 24 };
});

// The README's picture (docs/images/serve.png): the page on a laptop and on a phone.
async function sideBySide(laptopShot, phoneShot, path) {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  const image = (png, style) => `<img src="data:image/png;base64,${png.toString('base64')}" style="${style}">`;
  await page.setContent(`<body style="margin:0; padding:16px; display:inline-flex; gap:16px;
    align-items:center; background:#d9d9d4">${image(laptopShot, 'border-radius:6px')}
    ${image(phoneShot, 'width:260px; border-radius:16px; border:6px solid #222')}</body>`);
  await page.screenshot({ path, clip: await page.evaluate(() => {
    const box = document.body.getBoundingClientRect();
    return { x: 0, y: 0, width: box.width, height: box.height };
  }) });
  await page.close();
}

const report = {};
try {
  const laptop = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await laptop.goto(url);
  report.before = { brokenImages: await brokenImages(laptop), layout: await layout(laptop) };
  report.labels = {
    clear: await laptop.getByRole('button', { name: /clear/i }).count(),
    upload: await laptop.getByLabel('Upload a photo', { exact: true }).count(),
    pad: await laptop.getByRole('img', { name: /drawing pad/i }).count(),
  };
  await laptop.keyboard.press('Tab');
  report.focus = await laptop.evaluate(() => {
    const style = getComputedStyle(document.activeElement);
    const focus = { id: document.activeElement.id, outline: `${style.outlineStyle} ${style.outlineWidth}` };
    document.activeElement.blur();
    return focus;
  });

  report.one = await answerAfter(laptop, 'mouse', ONE);
  await laptop.screenshot({ path: `${screenshots}/one.png` });
  report.seven = await answerAfter(laptop, 'mouse', SEVEN);
  report.laptop = await layout(laptop);
  report.lowContrast = await lowContrast(laptop);
  await laptop.emulateMedia({ colorScheme: 'dark' });
  report.lowContrastDark = await lowContrast(laptop);
  await laptop.screenshot({ path: `${screenshots}/laptop-dark.png` });
  await laptop.emulateMedia({ colorScheme: 'light' });
  const laptopShot = await laptop.screenshot({ path: `${screenshots}/laptop.png`, clip: await contentBox(laptop) });

  await laptop.keyboard.press('Escape');
  report.afterEscape = await laptop.evaluate(() => {
    const pad = document.querySelector('#pad');
    const pixels = pad.getContext('2d').getImageData(0, 0, pad.width, pad.height).data;
    return {
      answer: document.querySelector('#answer').textContent,
      inked: pixels.some((value, i) => i % 4 !== 3 && value < 250),
    };
  });

  await laptop.setInputFiles('#upload', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not a picture') });
  report.textFile = { ...await readout(laptop), layout: await layout(laptop), lowContrast: await lowContrast(laptop) };
  await laptop.screenshot({ path: `${screenshots}/error.png` });

  // The photo has no file name extension, so the browser sends it as application/octet-stream.
  await laptop.click('#clear');
  await laptop.setInputFiles('#upload', photoPath);
  report.photo = {
    ...await readout(laptop),
    shown: await laptop.evaluate(() => {
      const photo = document.querySelector('#photo');
      return photo.checkVisibility() && photo.naturalWidth > 0;
    }),
  };
  await laptop.screenshot({ path: `${screenshots}/photo.png` });

  // The same photo dropped on the pad.
  await laptop.click('#clear');
  const dropped = await laptop.evaluateHandle(base64 => {
    const transfer = new DataTransfer();
    const bytes = Uint8Array.from(atob(base64), c => c.charCodeAt(0));
    transfer.items.add(new File([bytes], 'dropped-photo'));
    return transfer;
  }, (await readFile(photoPath)).toString('base64'));
  await laptop.dispatchEvent('#pad-area', 'drop', { dataTransfer: dropped });
  report.droppedPhoto = { ...await readout(laptop), note: await laptop.locator('#photo-note').textContent() };

  // The server's verdicts, whatever this server says: its answer is rewritten on the way.
  for (const verdict of ['unsure', 'not_a_digit', 'several_digits']) {
    await laptop.route('**/api/predict', async route => {
      const response = await route.fetch();
      await route.fulfill({ response, json: { ...await response.json(), verdict } });
    });
    report[verdict] = await answerAfter(laptop, 'mouse', ONE);
    await laptop.screenshot({ path: `${screenshots}/${verdict}.png` });
    await laptop.unroute('**/api/predict');
  }

  const phone = await browser.newPage({
    viewport: { width: 375, height: 667 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  await phone.goto(url);
  await phone.evaluate(() => {
    window.pointerTypes = [];
    document.querySelector('#pad').addEventListener('pointerdown', e => window.pointerTypes.push(e.pointerType));
  });
  report.phoneSeven = await answerAfter(phone, 'finger', SEVEN);
  report.phone = {
    ...await layout(phone),
    pointerTypes: await phone.evaluate(() => [...new Set(window.pointerTypes)]),
    scrolled: await phone.evaluate(() => window.scrollY),
    answerBottom: await phone.evaluate(() => document.querySelector('#answer').getBoundingClientRect().bottom),
    windowHeight: await phone.evaluate(() => window.innerHeight),
  };
  const phoneShot = await phone.screenshot({ path: `${screenshots}/phone.png` });
  await sideBySide(laptopShot, phoneShot, `${screenshots}/serve.png`);
  console.log(JSON.stringify(report));
} finally {
  await browser.close();
}
