"""The explorer page: one self-contained HTML file (inline CSS, plain JS, the data as a JSON script tag).

No CDN, no network request and no JS library: the views (SVG curves, a sortable/filterable table, token
spans, heat-map grids) are a few hundred lines of plain JS, which keeps the file small, makes it work opened
from disk offline, and needs nothing fetched at install time.  A plotting library that embeds its script
would add megabytes to every page for four line charts and two grids.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CSS = """
body{font:13px system-ui,sans-serif;margin:0;color:#222}header{padding:8px 14px;background:#f3f3f3;border-bottom:1px solid #ccc}
section{padding:8px 14px;border-bottom:1px solid #eee}h2{font-size:15px;margin:6px 0}
table{border-collapse:collapse}td,th{padding:2px 6px;border-bottom:1px solid #eee;text-align:right}
th{cursor:pointer;background:#fafafa}tr.sel{background:#fff3c4}tbody tr:hover{background:#eef}
.curves{display:flex;flex-wrap:wrap;gap:10px}.curves>div{width:332px}.curves svg{border:1px solid #ddd;background:#fff}
.grid{display:flex;gap:10px;flex-wrap:wrap}.resp{border:1px solid #ccc;padding:6px;width:360px;vertical-align:top}
.resp.ok{border-left:4px solid #2a2}.resp.bad{border-left:4px solid #c22}.tk{white-space:pre-wrap;font-family:monospace}
.tk span{border-radius:2px}.tk span.hit{outline:2px solid #06f}#tip{position:fixed;pointer-events:none;background:#222;
color:#fff;padding:4px 6px;font:11px monospace;white-space:pre;display:none;z-index:9}.heat td{padding:0;width:14px;height:14px}
.muted{color:#777}.scroll{max-height:320px;overflow:auto;width:fit-content;border:1px solid #eee;margin-top:4px}
#topk{columns:3;max-width:1100px}
"""

JS = r"""
const D=JSON.parse(document.getElementById('lens-data').textContent);
const $=s=>document.querySelector(s), el=(t,a={},...k)=>{const e=document.createElement(t);
 for(const[x,y]of Object.entries(a)){if(x==='on')for(const[ev,f]of Object.entries(y))e.addEventListener(ev,f);else e.setAttribute(x,y)}
 for(const c of k)e.append(c);return e};
const NS=document.getElementById('svgns').namespaceURI,sv=(t,a)=>{const e=document.createElementNS(NS,t);for(const k in a)e.setAttribute(k,a[k]);return e};
const fmt=v=>v==null?'–':(typeof v==='number'?(Number.isInteger(v)||Math.abs(v)>=100?v.toFixed(0):v.toPrecision(3)):String(v));
const R=D.responses, NR=R.step.length, steps=D.curves.step;
// the store's own steps (a sweep's checkpoints may be fewer than the training run's curve steps)
const sSteps=[...new Set(D.prompts.step)].sort((a,b)=>a-b), nResp={}, nShown={};
D.prompts.step.forEach((s,i)=>{nResp[s]=(nResp[s]||0)+D.prompts.n[i]});
for(let i=0;i<NR;i++)if(R.tok[i]>=0){const k=R.step[i]+':'+R.prompt_id[i];nShown[k]=(nShown[k]||0)+1}
const nearest=s=>sSteps.reduce((b,x)=>Math.abs(x-s)<Math.abs(b-s)?x:b,sSteps[0]);
let curStep=sSteps[0], curMetric=Object.keys(D.metrics)[0]||'entropy', curPrompt=null, sortKey='entropy', sortDir=-1;
function colour(v,lo,hi){if(v==null)return '#eee';const t=Math.max(0,Math.min(1,(v-lo)/((hi-lo)||1)));
 return `hsl(${(1-t)*220},80%,${85-t*30}%)`}
function range(a){let lo=Infinity,hi=-Infinity;for(const v of a)if(v!=null){if(v<lo)lo=v;if(v>hi)hi=v}return[lo,hi]}
function chart(title,series){const W=330,H=170,P=30,s=el('div');const g=sv('svg',{width:W,height:H});
 const xs=steps,[x0,x1]=range(xs),ys=series.flatMap(([k])=>D.curves[k]),[y0,y1]=range(ys);
 const X=x=>P+(x-x0)/((x1-x0)||1)*(W-P-8),Y=y=>H-18-(y-y0)/((y1-y0)||1)*(H-36);
 const b=D.boundary;if(b){if(b.ci)g.append(sv('rect',{x:X(b.ci[0]),y:8,width:Math.max(1,X(b.ci[1])-X(b.ci[0])),height:H-26,fill:'#fe9',opacity:.5}));
  g.append(sv('line',{x1:X(b.step),x2:X(b.step),y1:8,y2:H-18,stroke:'#c90','stroke-dasharray':'4 2'}))}
 const cur=sv('line',{class:'cur',y1:8,y2:H-18,stroke:'#06f','stroke-width':2,opacity:.6});cur._X=X;g.append(cur);
 const t=sv('text',{x:P,y:12,'font-size':11});t.textContent=`${title} [${fmt(y0)}, ${fmt(y1)}]`;g.append(t);
 series.forEach(([k,c])=>{const pts=xs.map((x,i)=>[x,D.curves[k][i]]).filter(p=>p[1]!=null);
  if(!pts.length)return;g.append(sv('polyline',{points:pts.map(p=>X(p[0])+','+Y(p[1])).join(' '),fill:'none',stroke:c}));
  pts.forEach(p=>{const d=sv('circle',{cx:X(p[0]),cy:Y(p[1]),r:3,fill:c,'data-step':p[0],style:'cursor:pointer'});
   const ti=sv('title',{});ti.textContent=`step ${p[0]} ${k} ${fmt(p[1])}`;d.append(ti);d.addEventListener('click',()=>openStep(p[0]));g.append(d)})});
 const lx=sv('text',{x:W-70,y:H-4,'font-size':10});lx.textContent='step →';g.append(lx);s.append(g);
 s.append(el('div',{class:'muted'},...series.flatMap(([k,c],i)=>[i?', ':'',el('span',{style:'color:'+c},'● '+k)]),' · blue line: the open step'));return s}
function drawCurves(){const c=$('#curves');c.replaceChildren(
 chart('entropy',[['entropy','#333'],['entropy_pos','#2a2'],['entropy_neg','#c22']]),
 chart('accuracy',[['accuracy','#06c'],['eval_accuracy','#f80']]),chart('response length',[['length','#639']]));
 const b=D.boundary;$('#bnd').textContent=b?`stage boundary: step ${b.step}`+(b.ci?` (95% CI ${b.ci[0]}–${b.ci[1]})`:'')+` [${b.detector}]`:`no stage boundary: ${D.boundary_reason}`}
function promptRows(){const P=D.prompts,out=[];for(let i=0;i<P.step.length;i++)if(P.step[i]===curStep)
 out.push({prompt_id:P.prompt_id[i],n:P.n[i],shown:nShown[curStep+':'+P.prompt_id[i]]||0,accuracy:P.accuracy[i],entropy:P.entropy[i],length:P.length[i],logppl:P.logppl[i],ppl_bucket:P.ppl_bucket[i]});return out}
function filtered(){const f=$('#fcorr').value,b=$('#fppl').value,emin=parseFloat($('#fent').value);
 return promptRows().filter(r=>(f==='all'||(f==='all-correct'?r.accuracy===1:f==='all-wrong'?r.accuracy===0:r.accuracy>0&&r.accuracy<1))
 &&(b==='all'||r.ppl_bucket===b)&&(isNaN(emin)||r.entropy>=emin)).sort((a,c)=>sortDir*((a[sortKey]>c[sortKey])-(a[sortKey]<c[sortKey])))}
const COLS=['prompt_id','n','shown','accuracy','entropy','length','logppl','ppl_bucket'];
function drawTable(){const rows=filtered(),tb=el('tbody');
 rows.forEach(r=>tb.append(el('tr',{class:r.prompt_id===curPrompt?'sel':'','data-prompt':r.prompt_id,on:{click:()=>openPrompt(r.prompt_id)}},...COLS.map(c=>el('td',{},fmt(r[c]))))));
 $('#ptable').replaceChildren(el('thead',{},el('tr',{},...COLS.map(c=>el('th',{on:{click:()=>{sortDir=sortKey===c?-sortDir:-1;sortKey=c;drawTable()}}},c+(sortKey===c?(sortDir<0?' ▼':' ▲'):''))))),tb);
 $('#pcount').textContent=`${rows.length} prompts`}
function csv(){const rows=filtered(),s=[COLS.join(',')].concat(rows.map(r=>COLS.map(c=>r[c]).join(','))).join('\n');
 const a=el('a',{href:URL.createObjectURL(new Blob([s],{type:'text/csv'})),download:`step${curStep}_prompts.csv`});document.body.append(a);a.click();a.remove()}
function respIdx(step,pid){const o=[];for(let i=0;i<NR;i++)if(R.step[i]===step&&(pid==null||R.prompt_id[i]===pid))o.push(i);return o}
function tokenSpans(i){const k=R.tok[i],box=el('div',{class:'tk'});if(k<0){box.append(el('span',{class:'muted'},R.text[i]));return box}
 const m=D.metrics[curMetric]||[],[lo,hi]=range(m);for(let j=D.offsets[k];j<D.offsets[k+1];j++){
  const s=el('span',{'data-j':j,style:'background:'+colour(m[j],lo,hi)},D.strings[D.token_ids[j]]);box.append(s)}return box}
function respCard(i){const ok=R.correct[i];return el('div',{class:'resp '+(ok?'ok':'bad'),'data-sample':R.sample_id[i]},
 el('div',{},`sample ${R.sample_id[i]} · reward ${fmt(R.reward[i])} · ${ok?'correct':'wrong'} · answer ${R.answer[i]??'–'} · gold ${R.gold[i]} · PPL ${R.ppl_bucket[i]} · H̄ ${fmt(R.mean_entropy[i])}`),tokenSpans(i))}
function openPrompt(pid){curPrompt=pid;drawTable();const ix=respIdx(curStep,pid);
 $('#group').replaceChildren(el('h2',{},`step ${curStep}, prompt ${pid}: ${ix.length} responses`),
  ix.length?'':el('div',{class:'muted'},'none of this prompt\'s responses is in the page\'s sample (raise --samples-per-step or --max-mb)'),
  el('div',{class:'muted'},D.prompt_text[curStep+':'+pid]||''),el('div',{class:'grid'},...ix.map(respCard)))}
function drawTokens(){const ix=respIdx(curStep,null).filter(i=>R.tok[i]>=0),m=D.metrics[curMetric]||[];
 $('#tokens').replaceChildren(...ix.map(respCard));const top=[];ix.forEach(i=>{const k=R.tok[i];
  for(let j=D.offsets[k];j<D.offsets[k+1];j++)top.push([D.metrics.entropy[j],j,i])});top.sort((a,b)=>b[0]-a[0]);
 $('#topk').replaceChildren(...top.slice(0,20).map(([h,j,i])=>el('li',{},el('a',{href:'#t'+j,on:{click:e=>{e.preventDefault();
  document.querySelectorAll('.hit').forEach(x=>x.classList.remove('hit'));const s=document.querySelector('#tokens span[data-j="'+j+'"]');
  if(s){s.classList.add('hit');s.scrollIntoView({block:'center'})}}}},`${JSON.stringify(D.strings[D.token_ids[j]])} H=${fmt(h)} (prompt ${R.prompt_id[i]}, sample ${R.sample_id[i]})`))));
 const n=respIdx(curStep,null).length;$('#shown').textContent=`showing ${ix.length} of ${nResp[curStep]??n} responses of step ${curStep} (${D.shown} of ${D.total} in the whole page)`}
function openStep(s){const asked=s;s=nearest(s);curStep=s;curPrompt=null;$('#stepsel').value=s;
 document.querySelectorAll('#curves line.cur').forEach(l=>{l.setAttribute('x1',l._X(s));l.setAttribute('x2',l._X(s))});
 $('#steptitle').textContent=`step ${s}`+(asked!==s?` (the store's nearest step to ${asked})`:'');drawTable();drawTokens();$('#group').replaceChildren()}
function heat(name,h){const[lo,hi]=range(h.values.flat()),t=el('table',{class:'heat'});
 t.append(el('tr',{},el('th',{},''),...h.steps.map(s=>el('th',{title:'step '+s,on:{click:()=>openStep(s)}},''))));
 h.rows.forEach((r,i)=>t.append(el('tr',{},el('th',{},String(h.buckets?`${r}/${h.buckets}`:r)),...h.values[i].map((v,k)=>el('td',{style:'background:'+colour(v,lo,hi),title:`step ${h.steps[k]}, ${r}: ${fmt(v)}`})))));
 return el('div',{},el('h2',{},name+` [${fmt(lo)}, ${fmt(hi)}]`),t)}
function tip(e){const s=e.target.closest('#tokens span[data-j],#group span[data-j]'),T=$('#tip');if(!s){T.style.display='none';return}
 const j=+s.dataset.j;T.textContent=[`token ${JSON.stringify(D.strings[D.token_ids[j]])}`].concat(Object.keys(D.metrics).map(m=>`${D.metric_labels[m]}: ${fmt(D.metrics[m][j])}`)).join('\n');
 T.style.display='block';T.style.left=(e.clientX+12)+'px';T.style.top=(e.clientY+12)+'px'}
function init(){$('#title').textContent=`${D.title} (${D.kind} store) · showing ${D.shown} of ${D.total} responses`;
 const ms=$('#metric');Object.keys(D.metrics).forEach(m=>ms.append(el('option',{value:m},D.metric_labels[m])));
 ms.addEventListener('change',()=>{curMetric=ms.value;drawTokens();if(curPrompt!=null)openPrompt(curPrompt)});
 const ss=$('#stepsel');sSteps.forEach(s=>ss.append(el('option',{value:s},'step '+s)));ss.addEventListener('change',()=>openStep(+ss.value));
 ['#fcorr','#fppl','#fent'].forEach(q=>$(q).addEventListener('input',drawTable));$('#csv').addEventListener('click',csv);
 document.addEventListener('mousemove',tip);drawCurves();
 $('#heat').replaceChildren(...Object.entries(D.heat).map(([k,h])=>heat(k.replace(/_/g,' '),h)));openStep(curStep)}
init();
"""

BODY = """<div id="tip"></div><svg id="svgns" width="0" height="0" style="position:absolute"></svg>
<header><b>entropy-lens view</b> · <span id="title">{summary}</span></header>
<section><h2>Curves <span class="muted">(click a point to open its step)</span></h2><div id="bnd" class="muted"></div>
<div id="curves" class="curves"></div></section>
<section><h2 id="steptitle"></h2><label>step <select id="stepsel"></select></label>
 <label>correctness <select id="fcorr"><option>all</option><option>mixed</option><option>all-correct</option><option>all-wrong</option></select></label>
 <label>PPL bucket <select id="fppl"><option>all</option><option>low</option><option>mid</option><option>high</option></select></label>
 <label>entropy ≥ <input id="fent" size="5"></label> <button id="csv">export CSV</button> <span id="pcount" class="muted"></span>
 <div class="scroll"><table id="ptable"></table></div></section>
<section id="group"></section>
<section><h2>Tokens</h2><label>colour by <select id="metric"></select></label> <span id="shown" class="muted"></span>
 <h2>Top-20 highest-entropy tokens shown</h2><ol id="topk"></ol><div id="tokens" class="grid"></div></section>
<section><h2>Heat maps <span class="muted">(over every token row; rows: relative-position bucket or category, columns: steps)</span></h2>
<div id="heat" class="grid"></div></section>"""


def embed_json(data: dict) -> str:
    """The data as the body of a ``<script type="application/json">``: ``</`` escaped so no string ends it."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")


def render(data: dict) -> str:
    """The whole page for :func:`entropy_lens.view.data.page_data`'s ``data``."""
    title = str(data.get("title", "entropy-lens view")).replace("&", "&amp;").replace("<", "&lt;")
    summary = f"{title} · showing {data.get('shown', 0)} of {data.get('total', 0)} responses"
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title} · entropy-lens view</title>'
            f"<style>{CSS}</style></head><body>\n{BODY.replace('{summary}', summary)}\n"
            f'<script type="application/json" id="lens-data">{embed_json(data)}</script>\n'
            f"<script>{JS}</script></body></html>\n")


#: Bytes of the page around the data, reserved in the size budget.
SHELL_BYTES = len(render({}).encode()) - len(embed_json({}).encode())


def write_page(data: dict, out: Path) -> Path:
    """Write the page atomically (a temporary file, then a rename) and return its path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(render(data), encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
