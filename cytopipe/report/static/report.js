(function(){
  var config={responsive:true,displaylogo:false,displayModeBar:'hover',toImageButtonOptions:{format:'svg',scale:1}};
  var divs=document.querySelectorAll('div.js-fig[data-fig]'),drawn=[];
  for(var i=0;i<divs.length;i++){
    var div=divs[i];
    var spec=JSON.parse(document.getElementById(div.getAttribute('data-fig')).textContent);
    if(typeof Plotly==='undefined'){
      div.textContent='plotly.js could not be loaded (assets/plotly.min.js missing)';continue;}
    drawn.push(Plotly.newPlot(div,spec.data,spec.layout||{},config));
    var links=spec.layout&&spec.layout.meta&&spec.layout.meta.links;
    if(links){(function(div,links){div.on('plotly_click',function(ev){
      var p=ev.points&&ev.points[0];if(!p)return;
      var key=(p.customdata&&p.customdata.length)?p.customdata[0]:p.y;
      if(links[key])window.location.href=links[key];});})(div,links);}
  }
  // a figure drawn inside closed <details> has no width: size it when it opens; a gate
  // reached by its link (#gate-...) opens the densities its cuts were searched on
  var details=document.querySelectorAll('details');
  for(var d=0;d<details.length;d++){details[d].addEventListener('toggle',function(ev){
    if(!ev.target.open||typeof Plotly==='undefined')return;
    var figs=ev.target.querySelectorAll('div.js-fig');
    for(var f=0;f<figs.length;f++)Plotly.Plots.resize(figs[f]);});}
  function openTarget(){
    var el=location.hash&&document.getElementById(location.hash.slice(1));
    var box=el&&el.closest&&el.closest('.gate');
    var cuts=box&&box.querySelector('details.cuts');
    if(cuts)cuts.open=true;}
  openTarget();window.addEventListener('hashchange',openTarget);
  // tells automated checks (and the browser test) that every figure has been drawn
  Promise.all(drawn).then(function(){document.body.setAttribute('data-plots-drawn',drawn.length);});
  var tables=document.querySelectorAll('table.sortable');
  for(var t=0;t<tables.length;t++){(function(tbl){
    var ths=tbl.tHead?tbl.tHead.rows[0].cells:[];
    for(var c=0;c<ths.length;c++){(function(col){ths[col].addEventListener('click',function(){
      var body=tbl.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      var asc=tbl.getAttribute('data-sort')!==String(col)+'a';
      rows.sort(function(a,b){
        var x=a.cells[col],y=b.cells[col];
        var xv=x.getAttribute('data-v'),yv=y.getAttribute('data-v');
        var r;
        if(xv!==null&&yv!==null&&xv!==''&&yv!==''){r=parseFloat(xv)-parseFloat(yv);}
        else if(xv===''||yv===''){r=(xv===''?1:0)-(yv===''?1:0);}
        else{r=x.textContent.localeCompare(y.textContent,undefined,{numeric:true});}
        return asc?r:-r;});
      for(var k=0;k<rows.length;k++)body.appendChild(rows[k]);
      tbl.setAttribute('data-sort',String(col)+(asc?'a':'d'));});})(c);}
  })(tables[t]);}
})();
