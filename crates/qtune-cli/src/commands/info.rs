use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use qtune_ir::Graph;

use crate::model;

#[derive(clap::Args)]
pub struct Args {
    /// The model (.onnx or .mlir).
    model: PathBuf,
    /// Static shapes for dynamic inputs, e.g. [[1,3,224,224]].
    #[arg(long = "input_shapes", alias = "input-shapes")]
    input_shapes: Option<String>,
}

/// The op of a node as TPU-MLIR prints it ([`qtune::deploy::op_label`]).
pub(crate) use qtune::deploy::op_label;

pub fn run(args: Args) -> Result<()> {
    let exec = model::load(&args.model, args.input_shapes.as_deref())?;
    let g = exec.graph();
    match print(g, &args) {
        // `qtune info m | head` closes the pipe early: not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn print(g: &Graph, args: &Args) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(out, "model: {}", args.model.display())?;
    writeln!(out, "inputs:")?;
    let shape = |v| g.shape_of(v).map(ToString::to_string).unwrap_or_default();
    for &i in &g.inputs {
        let v = g.value(i);
        writeln!(out, "  {} {} {}", v.name, v.dtype, shape(i))?;
    }
    writeln!(out, "outputs:")?;
    for &o in &g.outputs {
        let v = g.value(o);
        writeln!(out, "  {} {} {}", v.name, v.dtype, shape(o))?;
    }
    // Counted by Top op, with how many carry a fused Relu.
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (id, n) in g.nodes() {
        let top = qtune_ir::mlir::top_op_type(g, id)
            .map_or_else(|| n.op.op_type().to_string(), str::to_string);
        let c = counts.entry(top).or_default();
        c.0 += 1;
        c.1 += usize::from(n.relu.is_some());
    }
    writeln!(
        out,
        "ops ({} nodes after constant folding):",
        g.node_count()
    )?;
    for (op, (c, relu)) in &counts {
        if *relu > 0 {
            writeln!(out, "  {op} {c} ({relu} with do_relu)")?;
        } else {
            writeln!(out, "  {op} {c}")?;
        }
    }
    writeln!(out, "nodes (name, op, outputs with shapes):")?;
    for (id, n) in g.nodes() {
        let outs: Vec<String> = n
            .outputs
            .iter()
            .map(|&o| format!("{} {}", g.value(o).name, shape(o)))
            .collect();
        writeln!(
            out,
            "  {} {} -> {}",
            n.name,
            op_label(g, id),
            outs.join(", ")
        )?;
    }
    out.flush()
}
