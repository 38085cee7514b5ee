//! iPXE scripts rendered from boot profiles: kernel (with its command
//! line) and initrd, each an artifact on this server or a URL of its own.
//! The template is compiled once; the values it is given are validated in
//! `config::service` (one line each, no control characters), so a profile
//! cannot add script lines.

use minijinja::{context, AutoEscape, Environment, UndefinedBehavior};

use crate::model::{BootProfile, Mac};

/// How many fetches of the kernel and the initrd one boot may lose before
/// the script gives up (`exit 1`, so the firmware tries its next boot
/// device).
pub(super) const MAX_FETCH_FAILURES: u32 = 8;

/// A fetch that fails is tried again (issue 7, point 5): when the leader
/// dies mid-transfer, iPXE sees it fail at once (HTTP: the dead node's
/// kernel sends what it had queued, then FIN, a short read; TFTP: the new
/// leader answers the next ACK with ERROR 5). The first retry goes at once;
/// later ones wait a second each, because until the new leader's gratuitous
/// ARP reaches it, iPXE still sends to the dead node, whose kernel refuses
/// the connection at once (the VIP is still on its `lo`), and a loop
/// without a pause would spend every try in a few milliseconds.
const TEMPLATE: &str = "\
#!ipxe
# tandem boot profile {{ profile }}{% if mac %} for {{ mac }}{% endif %}
# A failed fetch is retried: the first time at once, then once a second,
# {{ max_failures }} failures at most.
set tries:int32 0
:kernel
kernel {{ kernel }}{% if initrd %} initrd=initrd{% endif %}{% if cmdline %} {{ cmdline }}{% endif %} && goto kernel_ok ||
inc tries
iseq ${tries} {{ max_failures }} && goto failed ||
iseq ${tries} 1 || sleep 1
goto kernel
:kernel_ok
{% if initrd %}:initrd
initrd --name initrd {{ initrd }} && goto initrd_ok ||
inc tries
iseq ${tries} {{ max_failures }} && goto failed ||
iseq ${tries} 1 || sleep 1
goto initrd
:initrd_ok
{% endif %}boot
:failed
echo tandem: {{ max_failures }} fetches failed, giving up
exit 1
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
            max_failures => MAX_FETCH_FAILURES,
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
