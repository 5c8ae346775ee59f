//! The README's ten-line example of the study route ("Notebooks"), run as written.

use std::path::Path;

use xinc::prelude::*;

#[test]
fn the_readme_example_runs() -> Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().map_err(|e| XincError::io(std::env::temp_dir(), e))?;

    let study: Study = Study::bundled(repo)?;
    let nerv: FrameCanvas = study.frame(Model::Nerv, 0, &CanvasOptions::default())?;
    let head: Layer = nerv.layer("head")?;
    let error = head.conservation_error()?;
    assert!(error < 1e-4, "the head's maps sum to its output: {error}");
    display_frame(&head.strongest(5)?);
    let tau = head.distributed()?.per_pixel[0].mean;
    assert!(tau > 0.0 && tau <= 1.0, "{tau}");
    let exact: FrameCanvas = study.frame(Model::Ffn, 0, &Method::Conservative.into())?;
    let error = exact.layer("layer2")?.conservation_error()?;
    assert!(error < 1e-4, "conservative layer2: {error}");
    let page = out.path().join("layer2.html");
    exact.layer("layer2")?.figure(8)?.write_html(&page)?;
    assert!(std::fs::metadata(&page)
        .map(|m| m.len() > 10_000)
        .unwrap_or(false));
    Ok(())
}
