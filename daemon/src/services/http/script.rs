//! iPXE scripts rendered from boot profiles: kernel (with its command
//! line) and initrd, each an artifact on this server or a URL of its own.
//! The template is compiled once; the values it is given are validated in
//! `config::service` (one line each, no control characters), so a profile
//! cannot add script lines.

use minijinja::{context, AutoEscape, Environment, UndefinedBehavior};

use crate::model::{BootProfile, Mac};

const TEMPLATE: &str = "\
#!ipxe
# tandem boot profile {{ profile }}{% if mac %} for {{ mac }}{% endif %}
kernel {{ kernel }}{% if initrd %} initrd=initrd{% endif %}{% if cmdline %} {{ cmdline }}{% endif %}
{% if initrd %}initrd --name initrd {{ initrd }}
{% endif %}boot
";

/// Where iPXE finds the script of the profile `name`.
#[must_use]
pub fn profile_script_path(name: &str) -> String {
    format!("/boot/profile/{name}.ipxe")
}

/// Where iPXE finds the script for `mac` (written as iPXE's `${mac}`:
/// lowercase, colon-separated, which is how [`Mac`] displays).
#[must_use]
pub fn reservation_script_path(mac: Mac) -> String {
    format!("/boot/{mac}.ipxe")
}

/// The compiled template.
pub(super) struct Scripts {
    env: Environment<'static>,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        // The template is a constant: a failure here is a bug caught by the tests.
        env.add_template("profile.ipxe", TEMPLATE)
            .expect("the built-in iPXE template compiles");
        Scripts { env }
    }

    /// The script of `p` (for `mac`, if asked by MAC), with artifact names
    /// resolved against `base`; `None` if the profile has no kernel.
    pub(super) fn render(
        &self,
        p: &BootProfile,
        base: &str,
        mac: Option<Mac>,
    ) -> Option<Result<String, minijinja::Error>> {
        let kernel = resolve(base, p.kernel.as_deref()?);
        let initrd = p.initrd.as_deref().map(|i| resolve(base, i));
        let t = match self.env.get_template("profile.ipxe") {
            Ok(t) => t,
            Err(e) => return Some(Err(e)),
        };
        Some(t.render(context! {
            profile => p.name,
            mac => mac.map(|m| m.to_string()),
            kernel => kernel,
            initrd => initrd,
            cmdline => p.cmdline,
        }))
    }
}

/// An artifact name becomes `base/NAME`; a URL stays as it is.
#[must_use]
pub(super) fn resolve(base: &str, name: &str) -> String {
    if name.contains("://") {
        name.to_owned()
    } else {
        format!("{base}/{name}")
    }
}
