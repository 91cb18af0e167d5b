//! Maps keyed by a name (a map's, a user's) that nearly every lookup finds present.

use std::collections::HashMap;
use std::hash::BuildHasher;

/// The value under `name`, made by `make` first if there is none. `HashMap::entry` takes
/// its key by value, so it would copy the name on every call; these maps are looked up on
/// every write or event and almost always hold the name already, so the name is copied only
/// when it is inserted.
pub fn get_or_insert_with<'m, V, S: BuildHasher>(
    map: &'m mut HashMap<String, V, S>,
    name: &str,
    make: impl FnOnce() -> V,
) -> &'m mut V {
    if !map.contains_key(name) {
        map.insert(name.to_owned(), make());
    }
    map.get_mut(name)
        .expect("the name is present: it was there or was just inserted")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_a_value_only_for_a_new_name() {
        let mut map: HashMap<String, u32> = HashMap::new();
        *get_or_insert_with(&mut map, "a", || 1) += 10;
        let again = get_or_insert_with(&mut map, "a", || unreachable!("present"));
        assert_eq!(*again, 11);
        assert_eq!(*get_or_insert_with(&mut map, "b", || 2), 2);
        assert_eq!(map.len(), 2);
    }
}
