use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;

use crate::model;

#[derive(clap::Args)]
pub struct Args {
    /// The model (.onnx).
    model: PathBuf,
    /// Static shapes for dynamic inputs, e.g. [[1,3,224,224]].
    #[arg(long = "input_shapes", alias = "input-shapes")]
    input_shapes: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let exec = model::load(&args.model, args.input_shapes.as_deref())?;
    let g = exec.graph();
    println!("model: {}", args.model.display());
    println!("inputs:");
    for &i in &g.inputs {
        let v = g.value(i);
        println!("  {} {} {}", v.name, v.dtype, g.shape_of(i)?);
    }
    println!("outputs:");
    for &o in &g.outputs {
        let v = g.value(o);
        println!("  {} {} {}", v.name, v.dtype, g.shape_of(o)?);
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, n) in g.nodes() {
        *counts.entry(n.op.op_type()).or_default() += 1;
    }
    println!("ops ({} nodes after constant folding):", g.node_count());
    for (op, c) in &counts {
        println!("  {op} {c}");
    }
    println!("nodes (name, op, outputs with shapes):");
    for (_, n) in g.nodes() {
        let outs: Vec<String> = n
            .outputs
            .iter()
            .map(|&o| {
                format!(
                    "{} {}",
                    g.value(o).name,
                    g.shape_of(o).map(ToString::to_string).unwrap_or_default()
                )
            })
            .collect();
        println!("  {} {} -> {}", n.name, n.op.op_type(), outs.join(", "));
    }
    Ok(())
}
