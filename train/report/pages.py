"""The report's HTML: index.html and tags/<n>.html, each a complete page with inline CSS.

Everything the pages need is in them or beside them (thumbs/*.jpg); the only script is the
index's table sorting and filtering, inline. No fonts, styles or scripts are fetched.
"""

from __future__ import annotations

from html import escape

NO_POSITIVES = "no positives in validation"   # a tag with no AP, recall or F1 to judge
CATEGORIES = {-1: "negative", 0: "general", 1: "artist", 3: "copyright", 4: "character",
              5: "meta", 9: "rating"}

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;
color:#222}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid
#ddd}
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:right;border-bottom:1px solid
#eee}
td:first-child,th:first-child{text-align:left}th{background:#f4f4f4;cursor:pointer;
user-select:none;position:sticky;top:0}
dl.summary{display:grid;grid-template-columns:max-content auto;gap:2px 14px}
dl.summary dt{color:#666}dl.summary dd{margin:0}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{width:420px;height:260px;
border:1px solid #eee}
.chart .title{font-weight:600;font-size:13px}.chart .tick,.chart .legend,.chart .label{
font-size:10px}
.filters{margin:.6em 0;display:flex;gap:10px;align-items:center}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:140px;font-size:12px}figure img{width:96px;height:96px;
object-fit:contain;background:#f4f4f4;display:block}
figure .score{font-weight:600}figure .truth{color:#555;word-break:break-word}
.muted{color:#888}a{color:#1558b0}
"""

SORT_JS = """
const table=document.getElementById('tags'),body=table.tBodies[0];
const rows=[...body.rows];let key=null,asc=true;
function cell(r,k){const v=r.cells[k].dataset.v??r.cells[k].textContent;
 if(v==='')return null;const n=parseFloat(v);return isNaN(n)?v.toLowerCase():n;}
table.tHead.addEventListener('click',e=>{const th=e.target.closest('th');if(!th)return;
 const k=th.cellIndex;asc=key===k?!asc:th.dataset.type!=='num';key=k;
 rows.sort((a,b)=>{const x=cell(a,k),y=cell(b,k);  // a cell without a value: last, both ways
  if(x===null||y===null)return (x===null)-(y===null);
  return (x<y?-1:x>y?1:0)*(asc?1:-1);});
 rows.forEach(r=>body.appendChild(r));
 table.querySelectorAll('th').forEach(h=>h.removeAttribute('aria-sort'));
 th.setAttribute('aria-sort',asc?'ascending':'descending');});
const q=document.getElementById('filter'),cat=document.getElementById('category'),
 sup=document.getElementById('min-support'),shown=document.getElementById('shown');
function filter(){const s=q.value.trim().toLowerCase(),c=cat.value,m=+sup.value||0;let n=0;
 rows.forEach(r=>{const ok=r.cells[0].textContent.toLowerCase().includes(s)&&
 (!c||r.dataset.category===c)&&+r.cells[2].textContent>=m;r.hidden=!ok;n+=ok;});
 shown.textContent=n;}
[q,cat,sup].forEach(el=>el.addEventListener('input',filter));filter();
"""


def page(title: str, body: str, script: str = "") -> str:
    """A complete HTML document."""
    js = f"<script>{script}</script>" if script else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width"><title>{escape(title)}</title><style>{CSS}</style>'
            f"</head><body>{body}{js}</body></html>\n")


def num(value, digits: int = 3) -> str:
    """A number for a table cell; an empty cell for None."""
    return "" if value is None else f"{value:.{digits}f}"


def summary_list(items: list[tuple[str, str]]) -> str:
    return '<dl class="summary">' + "".join(
        f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in items) + "</dl>"


def headline_table(report: dict) -> str:
    """Macro mAP and F1 at the threshold and at P=R, overall and by slice."""
    head = ("<tr><th>slice</th><th>tags</th><th>with positives</th><th>mAP</th>"
            "<th>micro F1</th><th>macro F1</th></tr>")
    every = len(report["per_tag"]["ap"]) if "per_tag" in report else ""
    rows = [f"<tr><td>all</td><td>{every}</td><td>{report['tags_with_positives']}</td>"
            f"<td>{num(report['mAP'])}</td><td>{num(report['at_threshold_micro_f1'])}</td>"
            f"<td>{num(report['at_threshold_macro_f1'])}</td></tr>"]
    for name, s in report.get("slices", {}).items():
        label = name
        if name.startswith("category_"):
            label = "category " + CATEGORIES.get(int(name.split("_")[1]), name)
        rows.append(f"<tr><td>{escape(label)}</td><td>{s['tags']}</td>"
                    f"<td>{s.get('tags_with_positives', '')}</td><td>{num(s['mAP'])}</td>"
                    f"<td>{num(s['micro_f1'])}</td><td>{num(s['macro_f1'])}</td></tr>")
    at = (f"<p>At threshold {report['threshold']:.2f}: micro F1 "
          f"{num(report['at_threshold_micro_f1'])}, macro F1 "
          f"{num(report['at_threshold_macro_f1'])}. The P=R threshold "
          f"({report['pr_threshold']:.2f}) and each tag's best-F1 threshold are tuned on this "
          f"validation split; cross-fitted (tuned on half of the pictures, scored on the other "
          f"half): at P=R micro F1 {num(report['at_pr_crossfit_micro_f1'])}, macro F1 "
          f"{num(report['at_pr_crossfit_macro_f1'])}; at each tag's threshold micro F1 "
          f"{num(report['per_tag_crossfit_micro_f1'])}, macro F1 "
          f"{num(report['per_tag_crossfit_macro_f1'])}. Scored on the pictures they were tuned "
          f"on (optimistic): at P=R micro F1 {num(report['at_pr_tuned_on_val_micro_f1'])}, "
          f"at each tag's threshold micro F1 {num(report['per_tag_tuned_on_val_micro_f1'])}, "
          f"macro F1 {num(report['per_tag_tuned_on_val_macro_f1'])}.</p>")
    return (f'<p class="headline">macro mAP <b id="map">{num(report["mAP"], 4)}</b> over '
            f"{report['tags_with_positives']} tags with positives, {report['samples']} "
            f"validation pictures.</p>{at}<table id=\"slices\">{head}{''.join(rows)}</table>")


def tag_table(tags: list[dict]) -> str:
    """Every tag with its numbers, sortable by a click on a header and filterable."""
    cats = sorted({t["category"] for t in tags})
    options = "".join(f'<option value="{c}">{escape(CATEGORIES.get(c, str(c)))}</option>'
                      for c in cats)
    head = ("<thead><tr><th>tag</th><th>category</th><th data-type=num>support</th>"
            "<th data-type=num>AP</th><th data-type=num>F1</th><th data-type=num>precision</th>"
            "<th data-type=num>recall</th><th data-type=num>threshold</th>"
            "<th data-type=num>train count</th></tr></thead>")
    rows = []
    for t in tags:
        ap = num(t["ap"]) if t["support"] else f'<span class="muted">{NO_POSITIVES}</span>'
        rows.append(
            f'<tr data-category="{t["category"]}"><td><a href="tags/{t["page"]}.html">'
            f'{escape(t["name"])}</a></td><td>{escape(CATEGORIES.get(t["category"], "?"))}</td>'
            f'<td>{t["support"]}</td><td data-v="{_sortable(t["ap"])}">{ap}</td>'
            f'<td data-v="{_sortable(t["f1"])}">{num(t["f1"])}</td>'
            f'<td data-v="{_sortable(t["precision"])}">{num(t["precision"])}</td>'
            f'<td data-v="{_sortable(t["recall"])}">{num(t["recall"])}</td>'
            f'<td>{num(t["threshold"], 2)}</td><td>{t["count"]}</td></tr>')
    filters = ('<div class="filters"><input id="filter" placeholder="filter tags" '
               'autocomplete="off"><select id="category"><option value="">every category'
               f'</option>{options}</select><label>support at least <input id="min-support" '
               'type="number" min="0" value="0" style="width:5em"></label>'
               f'<span><span id="shown">{len(tags)}</span> of {len(tags)} tags</span></div>')
    return f'{filters}<table id="tags">{head}<tbody>{"".join(rows)}</tbody></table>'


def _sortable(value) -> float | str:
    """A cell's sort key; "" (no value) sorts last whichever way the column is sorted."""
    return "" if value is None else value


def examples(title: str, items: list[dict], css_id: str, empty: str) -> str:
    """A titled grid of thumbnails: each with its score and true tags."""
    if not items:
        return f'<h2>{escape(title)}</h2><p class="muted" id="{css_id}">{escape(empty)}</p>'
    figures = []
    for it in items:
        truth = ", ".join(it["tags"]) or "(no tags)"
        figures.append(f'<figure data-key="{escape(it["key"])}"><img src="../thumbs/'
                       f'{it["thumb"]}.jpg" alt="{escape(it["key"])}" loading="lazy">'
                       f'<figcaption><span class="score">{it["score"]:.3f}</span> '
                       f'{escape(it["key"])}<div class="truth">{escape(truth)}</div>'
                       "</figcaption></figure>")
    return f'<h2>{escape(title)}</h2><div class="grid" id="{css_id}">{"".join(figures)}</div>'
