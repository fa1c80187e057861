// The static report: one HTML file with relative links to the run's figures, readable from disk with no server.

export interface ReportFigure {
  /** Path relative to the report file, inside the report's folder. */
  src: string;
  caption: string;
  /** The image's size in pixels, when known: the page lays out (and a full-page screenshot shows it) before it loads. */
  width?: number;
  height?: number;
}

export interface ReportSection {
  id: string;
  title: string;
  /** What the figure shows and how it was made, in two sentences. */
  text: string;
  figures: ReportFigure[];
  /** Markdown pipe tables or paragraphs, shown under the figures. */
  markdown?: string;
  /** Set when the step did not produce its outputs: the report says so instead of showing a broken figure. */
  missing?: string;
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

function inline(s: string): string {
  return escapeHtml(s)
    .replace(/`([^`]+)`/g, '<code>$1</code>')
    .replace(/\*\*([^*]+)\*\*/g, '<strong>$1</strong>')
    .replace(/\*([^*]+)\*/g, '<em>$1</em>')
    .replace(/\[([^\]]+)\]\(([^)\s]+)\)/g, '<a href="$2">$1</a>');
}

/** The Markdown subset the analyses write: pipe tables, headings, paragraphs. */
export function markdownToHtml(md: string): string {
  const out: string[] = [];
  const lines = md.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (/^\s*\|/.test(line)) {
      const rows: string[][] = [];
      while (i < lines.length && /^\s*\|/.test(lines[i])) {
        const cells = lines[i].trim().replace(/^\||\|$/g, '').split('|').map((c) => c.trim());
        if (!cells.every((c) => /^:?-{2,}:?$/.test(c))) rows.push(cells);
        i++;
      }
      i--;
      const [head, ...body] = rows;
      out.push(`<table><thead><tr>${head.map((c) => `<th>${inline(c)}</th>`).join('')}</tr></thead><tbody>${body.map((r) => `<tr>${r.map((c) => `<td>${inline(c)}</td>`).join('')}</tr>`).join('')}</tbody></table>`);
    } else if (/^#{1,6} /.test(line)) {
      const level = Math.min(6, line.indexOf(' ') + 2);
      out.push(`<h${level}>${inline(line.replace(/^#+ /, ''))}</h${level}>`);
    } else if (/^\s*- /.test(line)) {
      const items: string[] = [];
      while (i < lines.length && /^\s*- /.test(lines[i])) items.push(lines[i++].replace(/^\s*- /, ''));
      i--;
      out.push(`<ul>${items.map((item) => `<li>${inline(item)}</li>`).join('')}</ul>`);
    } else if (line.trim()) {
      // As in Markdown, lines that follow each other are one paragraph; a blank line, a table or a heading ends it.
      const text: string[] = [];
      while (i < lines.length && lines[i].trim() && !/^\s*(\||- )|^#{1,6} /.test(lines[i])) text.push(lines[i++].trim());
      i--;
      out.push(`<p>${inline(text.join(' '))}</p>`);
    }
  }
  return out.join('\n');
}

const STYLE = `
body { font-family: system-ui, -apple-system, "DejaVu Sans", sans-serif; margin: 0; color: #222; background: #fafafa; }
header { background: #20303c; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #c8d4dc; }
nav { padding: 10px 32px; background: #eef2f5; border-bottom: 1px solid #d8dee3; }
nav a { margin-right: 16px; color: #20506c; text-decoration: none; font-size: 14px; }
main { padding: 8px 32px 40px; max-width: 1400px; }
section { background: #fff; border: 1px solid #e2e6ea; border-radius: 6px; padding: 16px 20px; margin: 18px 0; }
section h2 { margin: 0 0 6px; font-size: 18px; }
section > p.what { margin: 0 0 12px; color: #444; max-width: 900px; }
figure { margin: 12px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; image-rendering: pixelated; }
figcaption { font-size: 13px; color: #555; }
table { border-collapse: collapse; margin: 10px 0; font-size: 13px; }
th, td { border: 1px solid #d5dade; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f1f4f6; }
.missing { color: #9a3412; background: #fff7ed; padding: 8px 12px; border-radius: 4px; }
code { background: #f1f4f6; padding: 0 3px; border-radius: 3px; }
header code { background: #3a5366; color: #fff; }
`;

export function renderReport(title: string, subtitle: string, sections: ReportSection[]): string {
  const nav = sections.map((s) => `<a href="#${s.id}">${escapeHtml(s.title)}</a>`).join('');
  const body = sections.map((s) => {
    const content = s.missing
      ? `<p class="missing">${escapeHtml(s.missing)}</p>`
      : [
          ...s.figures.map((f) => `<figure><img src="${escapeHtml(f.src)}" alt="${escapeHtml(f.caption)}"${f.width && f.height ? ` width="${f.width}" height="${f.height}"` : ''}><figcaption>${inline(f.caption)}</figcaption></figure>`),
          s.markdown ? markdownToHtml(s.markdown) : '',
        ].join('\n');
    return `<section id="${s.id}"><h2>${escapeHtml(s.title)}</h2><p class="what">${inline(s.text)}</p>\n${content}</section>`;
  });
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title><style>${STYLE}</style></head>
<body><header><h1>${escapeHtml(title)}</h1><p>${inline(subtitle)}</p></header>
<nav>${nav}</nav>
<main>
${body.join('\n')}
</main></body></html>
`;
}
