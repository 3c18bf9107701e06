// WCAG 2.1 AA contrast of every visible text and form control border on a page;
// returns what fails (text: 4.5:1, large text 3:1; control borders: 3:1).
() => {
  const rgb = s => (s.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const background = el => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const bad = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    const box = el.getBoundingClientRect();
    if (!own || box.width === 0 || getComputedStyle(el).visibility === "hidden") continue;
    const style = getComputedStyle(el);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
    const need = size >= 24 || (size >= 18.66 && bold) ? 3 : 4.5;
    const r = ratio(rgb(style.color).slice(0, 3), background(el));
    if (r < need) bad.push(`${el.tagName} "${el.textContent.trim().slice(0, 30)}" ${r.toFixed(2)}`);
  }
  for (const el of document.querySelectorAll("input, select")) {
    const r = ratio(rgb(getComputedStyle(el).borderTopColor).slice(0, 3), background(el.parentElement));
    if (r < 3) bad.push(`${el.tagName} border ${r.toFixed(2)}`);
  }
  return bad;
}
