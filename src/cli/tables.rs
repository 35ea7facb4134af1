//! The tables `check` and `objects` print (or their JSON).

use crate::check::CheckRow;
use crate::coupa::objects::CATALOGUE;

/// Prints `check`'s rows; an error names how many failed.
pub fn check(rows: &[CheckRow], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{:<8} {:<28} {:<6} DETAIL", "PART", "NAME", "RESULT");
        for r in rows {
            let result = if r.ok { "ok" } else { "FAIL" };
            println!(
                "{:<8} {:<28} {:<6} {}",
                r.component, r.name, result, r.detail
            );
        }
    }
    let failed = rows.iter().filter(|r| !r.ok).count();
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed");
    }
    Ok(())
}

/// Prints the object catalogue: name, path, what each allows, its actions.
pub fn objects(json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(CATALOGUE)?);
        return Ok(());
    }
    println!("{:<28} {:<44} {:<22} ACTIONS", "OBJECT", "PATH", "ALLOWS");
    for o in CATALOGUE {
        let caps = [
            ("list", o.caps.list),
            ("get", o.caps.get),
            ("create", o.caps.create),
            ("update", o.caps.update),
        ]
        .iter()
        .filter(|c| c.1)
        .map(|c| c.0)
        .collect::<Vec<_>>()
        .join(",");
        println!(
            "{:<28} {:<44} {:<22} {}",
            o.name,
            o.path,
            caps,
            o.actions.join(",")
        );
    }
    Ok(())
}
