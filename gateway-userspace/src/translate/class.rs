//! Which Ingresses this gateway serves: the IngressClass rules of Kubernetes.

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::store::Sourced;

/// The annotation that marks an IngressClass as the cluster's default.
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The class annotation that predates `spec.ingressClassName` and is still widely written.
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// This gateway's class name and controller.
#[derive(Clone, Debug, Default)]
pub struct ClassSelector {
    /// The class name served when no IngressClass object exists for it (file mode).
    pub class_name: String,
    /// The `spec.controller` value that makes an IngressClass ours.
    pub controller: String,
    /// Serve Ingresses without a class even when none of our classes is the default
    /// (`--watch-ingress-without-class`, as in ingress-nginx).
    pub serve_classless: bool,
}

impl ClassSelector {
    /// Decides whether `ingress` is ours: `Ok(class)` with the class it is served under, or
    /// `Err(reason)` naming why not.
    pub fn select(
        &self,
        ingress: &Ingress,
        classes: &[Sourced<IngressClass>],
    ) -> Result<String, String> {
        let named = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.clone())
            .or_else(|| {
                ingress
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION).cloned())
            });
        match named {
            Some(name) => {
                let class = classes
                    .iter()
                    .find(|c| c.object.metadata.name.as_deref() == Some(name.as_str()));
                match class {
                    Some(class) if self.is_ours(&class.object) => Ok(name),
                    Some(class) => Err(format!(
                        "IngressClass {name} belongs to controller {}",
                        controller_of(&class.object).unwrap_or("(none)")
                    )),
                    None if name == self.class_name => Ok(name),
                    None => Err(format!(
                        "IngressClass {name} does not exist and is not this gateway's class ({})",
                        self.class_name
                    )),
                }
            }
            None => {
                if classes.is_empty() || self.serve_classless {
                    return Ok(self.class_name.clone());
                }
                let default = classes
                    .iter()
                    .filter(|c| self.is_ours(&c.object) && is_default(&c.object))
                    .filter_map(|c| c.object.metadata.name.clone())
                    .min();
                default.ok_or_else(|| {
                    "no ingressClassName, and none of this gateway's IngressClasses is the default"
                        .to_string()
                })
            }
        }
    }

    fn is_ours(&self, class: &IngressClass) -> bool {
        controller_of(class) == Some(self.controller.as_str())
    }
}

fn controller_of(class: &IngressClass) -> Option<&str> {
    class.spec.as_ref().and_then(|s| s.controller.as_deref())
}

fn is_default(class: &IngressClass) -> bool {
    class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        .is_some_and(|v| v == "true")
}
